#!/usr/bin/python3
"""Reads an oxeye profile.pb.gz with pprof's own profile.proto (compiled here by protoc) and
prints it in the folded format, so the test can compare it with oxeye's stacks.folded.

This reader shares no code with oxeye's writer: the schema is Debian's copy of pprof's
profile.proto, the decoder is Google's Python protobuf runtime.

usage: pprof_to_folded.py PROFILE.pb.gz PROFILE_PROTO_DIR WORK_DIR
"""
import collections
import gzip
import importlib
import subprocess
import sys


_build_ids = {}


def gnu_build_id(path):
    """The GNU build ID readelf finds in the file ("" if none, None if unreadable)."""
    if path not in _build_ids:
        result = subprocess.run(["readelf", "-n", path], capture_output=True, text=True)
        found = None if result.returncode else ""
        for line in result.stdout.splitlines():
            if "Build ID:" in line:
                found = line.split("Build ID:")[1].strip()
        _build_ids[path] = found
    return _build_ids[path]


def main():
    profile_path, proto_dir, work_dir = sys.argv[1:4]
    subprocess.run(["protoc", f"-I{proto_dir}", f"--python_out={work_dir}", "profile.proto"], check=True)
    sys.path.insert(0, work_dir)
    profile_pb2 = importlib.import_module("profile_pb2")

    profile = profile_pb2.Profile()
    with gzip.open(profile_path, "rb") as f:
        profile.ParseFromString(f.read())
    strings = profile.string_table
    assert strings[0] == "", "string_table[0] must be empty"
    sample_types = [(strings[t.type], strings[t.unit]) for t in profile.sample_type]
    assert sample_types[0] == ("samples", "count"), sample_types
    assert (strings[profile.period_type.type], strings[profile.period_type.unit]) == ("cpu", "nanoseconds")
    assert profile.period > 0

    functions = {f.id: strings[f.name] for f in profile.function}
    mappings = {m.id: strings[m.filename] for m in profile.mapping}
    build_ids = {m.id: strings[m.build_id] for m in profile.mapping}
    locations = {}
    for location in profile.location:
        assert len(location.line) == 1, "one function per location"
        name = functions[location.line[0].function_id]
        # A frame oxeye could not name ("libc.so.6+0x27249") keeps its file, offset and build ID.
        if "+0x" in name and location.mapping_id:
            file_name, offset = name.rsplit("+0x", 1)
            assert mappings[location.mapping_id].endswith("/" + file_name), (name, mappings[location.mapping_id])
            assert location.address == int(offset, 16), (name, location.address)
            expected = gnu_build_id(mappings[location.mapping_id])
            if expected is not None:  # None: the file is gone or not visible from here
                assert build_ids[location.mapping_id] == expected, (name, build_ids[location.mapping_id], expected)
        if mappings.get(location.mapping_id) == "[kernel.kallsyms]":
            name += "_[k]"
        locations[location.id] = name

    folded = collections.Counter()
    for sample in profile.sample:
        labels = {strings[l.key]: (strings[l.str] if l.str else l.num) for l in sample.label}
        assert sample.value[1] == sample.value[0] * profile.period, "cpu = samples * period"
        # pprof lists the leaf first; folded lines go root first.
        frames = [locations[i] for i in reversed(sample.location_id)]
        folded[";".join([labels["process_name"]] + frames)] += sample.value[0]
    for line, count in sorted(folded.items()):
        print(f"{line} {count}")


if __name__ == "__main__":
    main()
