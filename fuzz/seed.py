#!/usr/bin/env python3
"""Fills fuzz/corpus/<target>/ with seeds taken from the captured Mongrel2 cases
(fixtures/mongrel2-cases: request and reply frames; fixtures/mongrel2/cases: the bytes the
HTTP clients sent), plus a few hand-made inputs. Existing files are kept (libFuzzer names
its own by content hash, so reruns only add)."""
import hashlib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "fixtures", "mongrel2-cases")
CLIENT_CASES = os.path.join(ROOT, "fixtures", "mongrel2", "cases")
MAX_SEED = 64 * 1024


def files(folder, pattern):
    for case in sorted(os.listdir(folder)):
        d = os.path.join(folder, case)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if re.fullmatch(pattern, name):
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                if len(data) <= MAX_SEED:
                    yield data


def header_block(frame):
    """The header block of a request frame: (bytes, terminator) or None."""
    parts = frame.split(b" ", 3)
    if len(parts) != 4:
        return None
    rest = parts[3]
    colon = rest.find(b":")
    if colon <= 0 or not rest[:colon].isdigit():
        return None
    n = int(rest[:colon])
    return rest[colon + 1 : colon + 1 + n], rest[colon + 1 + n : colon + 2 + n]


def seeds():
    requests = list(files(CASES, r".*-in-(json|tnet)\.bin"))
    replies = list(files(CASES, r".*-out-(json|tnet)\.bin"))
    clients = list(files(CLIENT_CASES, r"client\d*-sent\.bin"))
    yield "request_frame", requests
    yield "reply_frame", replies + [b"uuid 1:1, ", b"a-b 5:1 2 3, x", b"u 0:, "]
    json_blocks, tnet = [], [b"0:~", b"4:true!", b"3:1.5^", b"2:-7#", b"9:3:abc,0:]}"]
    for frame in requests:
        block = header_block(frame)
        if block is None:
            continue
        data, term = block
        if term == b",":
            json_blocks.append(data)
        elif term == b"}":
            tnet.append(b"%d:%s}" % (len(data), data))
    yield "json_headers", json_blocks + [b'{"a":["1","2"],"b":"\\u0041\\""}']
    yield "tnetstring", tnet
    yield "http_head", clients + [b"@chat {\"type\":\"join\"}\x00", b"<x a=\"1\"/>\x00"]
    chunked = [b"\x03" + c[c.find(b"\r\n\r\n") + 4 :] for c in clients if b"chunked" in c.lower()]
    yield "dechunk", chunked + [b"\x02" + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nT: 1\r\n\r\n"]


def main():
    out = os.path.join(ROOT, "fuzz", "corpus")
    only = set(sys.argv[1:])
    for target, items in seeds():
        if only and target not in only:
            continue
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for data in items:
            name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(items)} seeds in {os.path.relpath(d, ROOT)}")


if __name__ == "__main__":
    main()
