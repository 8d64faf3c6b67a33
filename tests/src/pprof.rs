//! A minimal protobuf reader for the pprof profiles oxeye writes (`*.pb.gz`): the wire format
//! only, for the decoders of [`crate::links`] and [`crate::off_cpu`]. It shares no code with
//! oxeye's writer.

use std::{fs, io::Read, path::Path};

/// The uncompressed bytes of gzipped file `path`; panics if it cannot be read or is not gzip.
pub(crate) fn gunzip(path: &Path) -> Vec<u8> {
    let compressed = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice()).read_to_end(&mut bytes).unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
    bytes
}

/// A protobuf field's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    /// A 64- or 32-bit value (none of the fields read).
    Fixed,
    Bytes(&'a [u8]),
}

impl Wire<'_> {
    /// A repeated integer field's values: one (unpacked) or a packed run.
    pub(crate) fn varints(self) -> Result<Vec<u64>, String> {
        match self {
            Wire::Varint(v) => Ok(vec![v]),
            Wire::Bytes(mut packed) => {
                let mut out = Vec::new();
                while !packed.is_empty() {
                    out.push(varint(&mut packed)?);
                }
                Ok(out)
            }
            Wire::Fixed => Err("a fixed-width value where integers were expected".to_owned()),
        }
    }
}

/// The fields of one message, in order.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.rest)?;
            let value = match key & 7 {
                0 => Wire::Varint(varint(&mut self.rest)?),
                1 => {
                    take(&mut self.rest, 8)?;
                    Wire::Fixed
                }
                2 => {
                    let length = usize::try_from(varint(&mut self.rest)?).map_err(|_| "a length over usize".to_owned())?;
                    Wire::Bytes(take(&mut self.rest, length)?)
                }
                5 => {
                    take(&mut self.rest, 4)?;
                    Wire::Fixed
                }
                other => return Err(format!("wire type {other}")),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err(format!("{n} bytes wanted, {} left", bytes.len()));
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a varint cut short")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint over 10 bytes".to_owned())
}


/// Writers of the wire format, for unit tests' hand-made profiles.
#[cfg(test)]
pub(crate) mod encode {
    pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn put_field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
        put_varint(out, number << 3 | 2);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    pub fn put_int(out: &mut Vec<u8>, number: u64, v: u64) {
        put_varint(out, number << 3);
        put_varint(out, v);
    }
}
