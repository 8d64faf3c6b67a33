"""Decodes a zstd-compressed symbfile (a devfiler `ranges` document) and prints its ranges as
JSON lines: {"start", "length", "depth", "func", "file", "call_file", "call_line", "lines"},
where "lines" holds [absolute offset from start, line] pairs.

Usage: decode.py GENERATED_DIR RANGES_FILE
GENERATED_DIR holds symbfile_pb2.py (protoc --python_out of tests/symbfile/symbfile.proto).
Fails (exit 1, one line on stderr) on anything a strict reader refuses: bad magic, a first
message that is not the header, unknown or return-pad messages, truncation, messages over
16 MiB, string references out of range, a relative address before any absolute one, line
tables with columns of different lengths.
"""
import json
import sys

import zstandard

sys.path.insert(0, sys.argv[1])
import symbfile_pb2  # noqa: E402

MAX_MESSAGE = 16 << 20
HEADER, RANGE, RETURN_PAD, STRINGS = 1, 2, 3, 4


def varint(data, at):
    value, shift = 0, 0
    for i in range(10):
        if at + i >= len(data):
            raise ValueError("truncated varint")
        byte = data[at + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at + i + 1
        shift += 7
    raise ValueError("varint too long")


def pick(message, group, strings):
    which = message.WhichOneof(group)
    if which is None:
        return None
    value = getattr(message, which)
    if which.endswith("_ref"):
        if value >= len(strings):
            raise ValueError(f"{which} {value} past a table of {len(strings)}")
        return strings[value]
    return value


def main():
    with open(sys.argv[2], "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    if data[:8] != b"symbfile":
        raise ValueError("bad magic")
    at, first, strings, previous = 8, True, None, None
    out = sys.stdout
    while at < len(data):
        length, at = varint(data, at)
        kind, at = varint(data, at)
        if length > MAX_MESSAGE:
            raise ValueError(f"message of {length} bytes")
        body = data[at:at + length]
        if len(body) != length:
            raise ValueError("truncated message")
        at += length
        if first:
            if kind != HEADER:
                raise ValueError(f"first message has type {kind}")
            first = False
            continue
        if kind == STRINGS:
            table = symbfile_pb2.StringTableV1()
            table.ParseFromString(body)
            strings = list(table.strings)
        elif kind == RANGE:
            r = symbfile_pb2.RangeV1()
            r.ParseFromString(body)
            table = strings or []
            which = r.WhichOneof("elf_va")
            if which == "set_elf_va":
                start = r.set_elf_va
            elif which == "delta_elf_va" and previous is not None:
                start = (previous + r.delta_elf_va) & (2**64 - 1)
            else:
                raise ValueError("range without an absolute start to follow")
            previous = start
            func = pick(r, "func", table)
            if func is None:
                raise ValueError("range without a function")
            offsets, numbers = list(r.line_table.offset), list(r.line_table.line_number)
            if len(offsets) != len(numbers):
                raise ValueError("line table columns differ in length")
            absolute, total = [], 0
            for delta, line in zip(offsets, numbers):
                total += delta
                absolute.append([total, line])
            json.dump({"start": start, "length": r.length, "depth": r.depth, "func": func,
                       "file": pick(r, "file", table), "call_file": pick(r, "call_file", table),
                       "call_line": r.call_line, "lines": absolute}, out)
            out.write("\n")
        else:
            raise ValueError(f"message of type {kind}")
    if first:
        raise ValueError("no header")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # one line, whatever went wrong
        print(f"decode.py: {error}", file=sys.stderr)
        sys.exit(1)
