#!/usr/bin/env python3
"""cyrus_backup_check.py on the committed backupd test data.

node/tests/data/backupd holds real backupd files: Cyrus must accept them,
they must hold what their manifest.json says, and the checker must reject
a copy with a flipped byte (Cyrus 3.6.1 then spins: the tool timeout is
what rejects it) and refuse a user whose index is missing.  No servers.
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
CHECKER = os.path.join(HERE, "..", "cyrus_backup_check.py")
DATA = os.path.join(HERE, "..", "..", "node", "tests", "data", "backupd")
USERS = ["alice", "bob"]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def checker(*args):
    r = subprocess.run([sys.executable, CHECKER] + list(args),
                       capture_output=True, text=True, timeout=90)
    return r.returncode, r.stdout + r.stderr


def main():
    cyruslab.skip_unless_runnable()
    rc, out = checker("-v", DATA, *USERS)
    expect(rc == 0, "Cyrus accepts the committed backupd files", out)
    with open(os.path.join(DATA, "manifest.json")) as f:
        manifest = json.load(f)
    listed = set(re.findall(r"^([0-9a-f]{40})$", out, re.M))
    contents = backupcheck.backup_mailboxes(
        backupcheck.find_backup_files(DATA, USERS))
    for user in USERS:
        mailboxes = manifest["backupd"][user]["mailboxes"]
        guids = {m["guid"] for box in mailboxes for m in box["messages"]}
        expect(guids and guids <= listed,
               "%s: manifest's %d GUIDs are in cyr_backup's listing"
               % (user, len(guids)), "%r\n%s" % (sorted(guids), out))
        expect(contents[user] == mailboxes,
               "%s: cyr_backup json mailboxes equals the manifest" % user,
               json.dumps(contents[user], indent=1))
        expect(len(manifest["backupd"][user]["chunks"]) >= 3,
               "%s: several chunks" % user)
    scratch = tempfile.mkdtemp(prefix="cairn-itest-")
    try:
        bad = os.path.join(scratch, "flipped")
        shutil.copytree(DATA, bad)
        with open(os.path.join(bad, "alice"), "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x55]))
        rc, out = checker("--timeout", "3", bad, *USERS)
        expect(rc == 1 and "alice: REJECTED" in out
               and "bob: accepted" in out,
               "a flipped byte in alice's file rejects alice only", out)
        os.unlink(os.path.join(bad, "bob.index"))
        rc, out = checker(bad, "bob")
        expect(rc == 2, "a data file without its index is not checked", out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("test_backup_check_testdata: passed in %.1fs"
          % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
