#!/usr/bin/env python3
"""Turn the strace the `nri` lab scenario keeps (results/nri-wire.strace) into
wire fixtures for the unit tests: for each NRI session, the bytes containerd
sent to the plugin and the bytes the plugin sent back, exactly as they
crossed the socket.

    tests/lab/nri-wire-fixture.py RUN_DIR/results/nri-wire.strace tests/fixtures/nri
"""
import os
import re
import sys

CALL = re.compile(r'^(recvfrom|sendto)\((\d+), "((?:\\x[0-9a-f]{2})*)"(?:\.\.\.)?, .*\)\s*=\s*(-?\d+)')


def sessions(path):
    """Yields (received, sent) byte strings, one pair per connection."""
    rx, tx = bytearray(), bytearray()
    for line in open(path):
        m = CALL.match(line)
        if not m:
            continue
        call, _fd, data, n = m.groups()
        n = int(n)
        if n < 0:
            continue
        chunk = bytes.fromhex(data.replace("\\x", ""))[:n]
        if call == "recvfrom" and n == 0:  # the runtime closed the connection
            yield bytes(rx), bytes(tx)
            rx, tx = bytearray(), bytearray()
        elif call == "recvfrom":
            rx += chunk
        else:
            tx += chunk
    if rx or tx:
        yield bytes(rx), bytes(tx)


def main():
    strace, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for i, (rx, tx) in enumerate(sessions(strace), 1):
        for name, data in (("from-containerd", rx), ("from-plugin", tx)):
            path = os.path.join(out, f"session{i}-{name}.bin")
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
