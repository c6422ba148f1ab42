#!/usr/bin/env python3
"""Benchmark (ctest label bench): cairnctl restore of a bigger user.

One user gets N messages of ~4 KB and one of ~25 MB (LMTP), is backed up
by backupd (sync_client -u), imported with `cairnctl import`, and
restored into three fresh sync_servers: `cairnctl restore --mode apply`,
`--mode restore`, and Cyrus's own `restore -U -a`.  Prints the time and
the peak memory of each (the 25 MB body is streamed: memory must stay
far below it) and checks every replica equals the source; asserts
nothing about time.  Usage: test_restore_scale.py [N] (default 1000).
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cyruslab  # noqa: E402
import labmail  # noqa: E402

USER = "big"
FIELDS = ("uniqueid", "uidvalidity", "uidnext", "highestmodseq", "messages")


def cairnctl():
    build = os.environ.get("CAIRN_BUILD_DIR",
                           os.path.join(HERE, "..", "..", "build"))
    path = os.path.join(build, "ops", "cairnctl")
    if not os.access(path, os.X_OK):
        print("cairnctl not built at %s" % path)
        sys.exit(77)
    return path


def measured(argv):
    """Runs argv under /usr/bin/time when there: (process, seconds,
    peak RSS in KiB or None)."""
    timer = shutil.which("time") or "/usr/bin/time"
    wrapped = ([timer, "-f", "maxrss_kb=%M"] + argv
               if os.access(timer, os.X_OK) else argv)
    begin = time.monotonic()
    proc = subprocess.run(wrapped, capture_output=True, text=True,
                          timeout=600)
    seconds = time.monotonic() - begin
    rss = re.search(r"maxrss_kb=(\d+)", proc.stderr)
    return proc, seconds, int(rss.group(1)) if rss else None


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    cyruslab.skip_unless_runnable()
    ctl = cairnctl()
    failures = 0
    with cyruslab.Lab() as lab:
        backup = lab.add_backup()
        targets = {name: lab.add_replica(name)
                   for name in ("apply", "restore", "cyrus")}
        source = lab.add_source(channels={"backup": backup.csync_address})
        lab.start()
        begin = time.monotonic()
        for first in range(1, count + 1, 200):
            last = min(count, first + 199)
            source.deliver(USER, *[labmail.make_message(USER, i, size=4000)
                                   for i in range(first, last + 1)])
        big = labmail.make_message(USER, count + 1, size=20 * 1024 * 1024)
        source.deliver(USER, big)
        print("# delivered %d messages + one of %d bytes in %.1f s"
              % (count, len(big), time.monotonic() - begin))
        r = source.sync_client(users=[USER], channel="backup", timeout=600)
        if not r.ok:
            raise AssertionError(str(r))
        data_dir = os.path.join(lab.dir, "cairn-data")
        password_file = os.path.join(lab.dir, "restore.pw")
        with open(password_file, "w") as f:
            f.write(cyruslab.REPLICATION_PASSWORD + "\n")
        proc, seconds, rss = measured(
            [ctl, "import", "--json", "--data-dir", data_dir, "--user", USER,
             backup.backup_files()[USER]])
        report = json.loads(proc.stdout or "{}")
        print("# cairnctl import: %.2f s, peak %s KiB, %s, %d differences"
              % (seconds, rss, report.get("outcome"),
                 report.get("differences", -1)))
        failures += report.get("outcome") != "imported"
        for mode in ("apply", "restore"):
            server = "127.0.0.1:%d" % targets[mode].ports["csync"]
            proc, seconds, rss = measured(
                [ctl, "restore", "--json", "--quiet", "--data-dir", data_dir,
                 "--user", USER, "--server", server, "--authname",
                 cyruslab.REPLICATION_USER, "--password-file", password_file,
                 "--mode", mode])
            summary = json.loads(proc.stdout or "{}")
            print("# cairnctl restore --mode %s: %.2f s, peak %s KiB, %s "
                  "bodies, %s bytes, exit %d"
                  % (mode, seconds, rss, summary.get("messages_uploaded"),
                     summary.get("bytes_uploaded"), proc.returncode))
            failures += proc.returncode != 0
        begin = time.monotonic()
        r = backup.restore(USER, targets["cyrus"], timeout=600)
        print("# Cyrus restore -U -a: %.2f s, exit %s"
              % (time.monotonic() - begin, r.returncode))
        failures += not r.ok
        want = source.snapshot(users=[USER])
        for name, target in targets.items():
            got = target.snapshot(users=[USER])
            differ = sorted(f for box in want for f in FIELDS
                            if want[box][f] != got.get(box, {}).get(f))
            print("%s - %s replica equals the source%s"
                  % ("not ok" if differ else "ok", name,
                     " except %s" % differ if differ else ""))
            failures += bool(differ)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
