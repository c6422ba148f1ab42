#!/usr/bin/env python3
"""extract_apply.py - regenerate node/tests/data/*.apply from the recorded
csync transcripts (parse_transcript.py format): the client-to-server APPLY
commands of one sync_client run, byte for byte, literals included.

  extract_apply.py TRANSCRIPT.log OUT.apply
  extract_apply.py TRANSCRIPT.log OUT.get_user --get-user
        (backupd's reply to the run's first GET: the state before it)

Only run by hand when the vectors change; tests read the .apply files.
"""
import re
import sys

HDR = re.compile(rb"^--- c(\d+) (C->S|S->C) \+([0-9.]+)s (\d+) bytes.*---\n$")
LITERAL = re.compile(rb"(?:\{(\d+)\+?\}|%\{[^ ]+ [0-9a-fA-F]+ (\d+)\})\r\n$")


def stream(path, conn):
    out = b""
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return out
            m = HDR.match(line)
            if not m:
                continue
            payload = f.read(int(m.group(4)))
            f.read(1)
            if int(m.group(1)) == conn and m.group(2) == b"C->S":
                out += payload


def commands(data):
    pos = 0
    while pos < len(data):
        start = pos
        while True:
            end = data.index(b"\n", pos) + 1
            m = LITERAL.search(data, pos, end)
            if m and m.end() == end:
                pos = end + int(m.group(1) or m.group(2))
                continue
            pos = end
            break
        yield data[start:pos]


def main():
    data = stream(sys.argv[1], 1)
    with open(sys.argv[2], "wb") as out:
        for cmd in commands(data):
            if cmd.startswith(b"APPLY "):
                out.write(cmd)


def first_get_reply(path):
    """The untagged lines of the first GET reply (after COMPRESS)."""
    data = stream_dir(path, 1, b"S->C")
    lines = data.split(b"\r\n")
    out, started = [], False
    for line in lines:
        if line.startswith(b"OK DEFLATE"):
            started = True
            continue
        if started and line.startswith(b"* "):
            out.append(line + b"\r\n")
        elif started and line.startswith(b"OK"):
            return b"".join(out)
    return b"".join(out)


def stream_dir(path, conn, direction):
    out = b""
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return out
            m = HDR.match(line)
            if not m:
                continue
            payload = f.read(int(m.group(4)))
            f.read(1)
            if int(m.group(1)) == conn and m.group(2) == direction:
                out += payload


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "--get-user":
        with open(sys.argv[2], "wb") as out:
            out.write(first_get_reply(sys.argv[1]))
    else:
        main()
