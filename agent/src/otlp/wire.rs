//! Writing protobuf by hand, for the messages built once per traced request: a span written
//! straight into its batch's bytes costs no allocation per attribute and no second pass to
//! size it (prost's `Message` wants an owned tree, then walks it twice).
//!
//! [`Encoded`] carries such bytes through the exporter as a `prost::Message`, so the same
//! queue, retries and gRPC codec serve it.

use bytes::{BufMut, Bytes};
use prost::encoding::{encoded_len_varint, WireType};

/// Writes `value` as a varint. Nearly every varint of a span (keys, lengths, ports, status
/// codes) is one byte or two: written straight into the vector, where `prost`'s generic
/// `encode_varint` (a call and a capacity check per byte) was a sixteenth of oxeye's CPU
/// under nginx load.
#[inline(always)]
pub fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes the key of field `tag`.
#[inline]
pub fn key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), out);
}

/// A `bytes` or `string` field; an empty one is left out, as proto3 does.
#[inline]
pub fn bytes_field(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    if value.is_empty() {
        return;
    }
    key(tag, WireType::LengthDelimited, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// A `fixed64` field.
#[inline]
pub fn fixed64_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::SixtyFourBit, out);
        out.put_u64_le(value);
    }
}

/// A varint field (`int32`, `int64`, enums).
#[inline]
pub fn varint_field(tag: u32, value: i64, out: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::Varint, out);
        varint(value as u64, out);
    }
}

/// A nested message of field `tag`, written by `write` (its length is patched in after: one
/// reserved byte, moved only when the message is 128 bytes or more).
#[inline]
pub fn message_field(tag: u32, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    key(tag, WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    let width = encoded_len_varint(len as u64);
    if width > 1 {
        out.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
    }
    // On the stack: a heap prefix here was an allocation per nested message, ~27 per span.
    let mut prefix = [0u8; 10];
    let mut slot = &mut prefix[..];
    prost::encoding::encode_varint(len as u64, &mut slot);
    out[at..at + width].copy_from_slice(&prefix[..width]);
}

/// An OTLP `KeyValue` with a string value, field `tag` of its parent. Sized up front rather
/// than through [`message_field`]: a span carries a dozen of these.
#[inline]
pub fn string_attribute(tag: u32, name: &str, value: &str, out: &mut Vec<u8>) {
    // AnyValue { string_value = 1 }: written even when empty, so the value is a string.
    let any_value = 1 + delimited_len(value.len());
    key_value(tag, name, any_value, out);
    key(1, WireType::LengthDelimited, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
}

/// An OTLP `KeyValue` with an integer value, field `tag` of its parent.
#[inline]
pub fn int_attribute(tag: u32, name: &str, value: i64, out: &mut Vec<u8>) {
    // AnyValue { int_value = 3 }: written even when 0.
    let any_value = 1 + encoded_len_varint(value as u64);
    key_value(tag, name, any_value, out);
    key(3, WireType::Varint, out);
    varint(value as u64, out);
}

/// A length-delimited payload of `len` bytes with its length prefix.
#[inline]
fn delimited_len(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// A `KeyValue`'s start, up to its `AnyValue`'s contents (`any_value` bytes), which the
/// caller writes next.
#[inline]
fn key_value(tag: u32, name: &str, any_value: usize, out: &mut Vec<u8>) {
    let name_field = if name.is_empty() { 0 } else { 1 + delimited_len(name.len()) };
    key(tag, WireType::LengthDelimited, out);
    varint((name_field + 1 + delimited_len(any_value)) as u64, out);
    bytes_field(1, name.as_bytes(), out);
    key(2, WireType::LengthDelimited, out);
    varint(any_value as u64, out);
}

/// An encoded protobuf message, sent as is. Decoding one is not supported (oxeye only sends
/// them): it reads as empty.
#[derive(Clone, Default, PartialEq)]
pub struct Encoded(pub Bytes);

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(&mut self, tag: u32, wire_type: WireType, buf: &mut impl bytes::Buf, ctx: prost::encoding::DecodeContext) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
    use prost::{encoding::encode_varint, Message};

    /// A message holding `KeyValue`s as field 1 (the shape of `Resource`).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Attributes {
        #[prost(message, repeated, tag = "1")]
        attributes: Vec<KeyValue>,
    }

    #[test]
    fn attributes_decode_as_prost_writes_them() {
        let long = "x".repeat(300);
        let mut out = Vec::new();
        string_attribute(1, "url.path", "/a", &mut out);
        int_attribute(1, "server.port", 8080, &mut out);
        int_attribute(1, "zero", 0, &mut out);
        string_attribute(1, "long", &long, &mut out);
        string_attribute(1, "empty", "", &mut out);
        let decoded = Attributes::decode(&out[..]).expect("decodes");
        let values: Vec<_> = decoded.attributes.iter().map(|kv| (kv.key.as_str(), kv.value.clone().and_then(|v| v.value))).collect();
        assert_eq!(
            values,
            [
                ("url.path", Some(Value::StringValue("/a".into()))),
                ("server.port", Some(Value::IntValue(8080))),
                ("zero", Some(Value::IntValue(0))),
                ("long", Some(Value::StringValue(long.clone()))),
                ("empty", Some(Value::StringValue(String::new()))),
            ]
        );
        assert_eq!(out, decoded.encode_to_vec(), "byte for byte what prost writes");
    }

    #[test]
    fn nested_lengths_of_every_width() {
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut out = vec![0xaa];
            message_field(1, &mut out, |out| out.extend(std::iter::repeat_n(7, len)));
            let mut expected = vec![0xaa, 0x0a];
            encode_varint(len as u64, &mut expected);
            expected.extend(std::iter::repeat_n(7, len));
            assert_eq!(out, expected, "length {len}");
        }
    }

    #[test]
    fn varints_are_prosts() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            varint(value, &mut ours);
            encode_varint(value, &mut theirs);
            assert_eq!(ours, theirs, "{value}");
        }
    }

    #[test]
    fn encoded_is_sent_as_is() {
        let bytes = Bytes::from_static(&[0x0a, 0x00]);
        let encoded = Encoded(bytes.clone());
        assert_eq!(encoded.encode_to_vec(), bytes.to_vec());
        assert_eq!(encoded.encoded_len(), 2);
    }
}
