#!/usr/bin/env python3
"""test_kill.py - SIGKILL a process that is ingesting into a store at
random points, at least 50 times; after each kill the store must reopen
(cutting any torn tail), verify at every level, and still hold every batch
that was acknowledged before the kill.

usage: test_kill.py NODE_TOOL [KILLS]
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def ingest_until_killed(tool, data, start, delay):
    """Start ingesting at batch `start`, kill after `delay` seconds; return
    the last acknowledged batch number (start - 1 if none)."""
    proc = subprocess.Popen([tool, "ingest", data, str(start)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.set_blocking(proc.stdout.fileno(), False)
    last = start - 1
    buffered = b""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.001)
        chunk = proc.stdout.read()
        if chunk:
            buffered += chunk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read()
    if rest:
        buffered += rest
    for line in buffered.decode().splitlines():
        if line.startswith("ack "):
            last = max(last, int(line[4:]))
    err = proc.stderr.read().decode()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit("ingest ended by itself (%s): %s"
                         % (proc.returncode, err))
    return last


def main():
    tool = os.path.abspath(sys.argv[1])
    kills = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    rng = random.Random(int(os.environ.get("CAIRN_KILL_SEED", "1")))
    tmp = tempfile.mkdtemp(prefix="cairn-kill-")
    try:
        data = os.path.join(tmp, "user")
        acked = 0
        for i in range(kills):
            delay = rng.uniform(0.0, 0.12)
            acked = ingest_until_killed(tool, data, acked + 1, delay)
            check = subprocess.run([tool, "check", data, str(acked)],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                print("kill %d (after %.3fs, %d acknowledged): %s"
                      % (i + 1, delay, acked, check.stderr.strip()))
                return 1
        print("%d kills, %d batches acknowledged, none lost, verify ok"
              % (kills, acked))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
