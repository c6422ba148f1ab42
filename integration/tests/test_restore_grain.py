#!/usr/bin/env python3
"""Finer grain and points in time for cairnctl restore from the cluster,
into a real Cyrus 3.6 replica (issue 13, parts 3 and 4).

SOURCE -> real sync_client -u -> cairn-router -> 3 cairn-nodes.  User
tim is backed up (time T); then, after T, folder Work is deleted, an
INBOX message expunged, flags changed on another, a message M delivered
and backed up, then M expunged: each change synced.  Then:
  - `cairnctl user history tim` lists the points and the changes
    (Work renamed to DELETED.* or removed after T);
  - `restore --as-of @T` into the replica: the replica equals the
    source as it was at T (Work back, the expunged message back, flags
    as at T: UIDs, flags, GUIDs, bytes);
  - `restore --as-of now --dry-run` plans no Work;  an --as-of before the
    log's first line fails naming the oldest restorable time;
  - `restore --message GUID(M)`: M joins the replica's live INBOX as a
    new message (new UID, same bytes); `--mailbox INBOX --uid N` the same
    for INBOX's uid N;
  - `cairnctl user dump message tim GUID` writes M's exact bytes.
Prints each mode's time and command.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
from test_restore_cairn import contents  # noqa: E402

STARTED = time.monotonic()
USER = "tim"
TIMES = []


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def timed(cluster, what, *args, stdout=None):
    begin = time.monotonic()
    if stdout is None:
        r = cluster.cairnctl(*args, timeout=300)
    else:
        with open(stdout, "wb") as out:
            p = subprocess.run([cluster.binaries.cairnctl, "-c",
                                cluster.config_path] + list(args),
                               stdout=out, stderr=subprocess.PIPE,
                               timeout=300)
        r = subprocess.CompletedProcess(p.args, p.returncode, "",
                                        p.stderr.decode())
    TIMES.append((what, time.monotonic() - begin,
                  "cairnctl " + " ".join(str(a) for a in args)))
    return r


def messages(server, user, folder="INBOX"):
    """{uid: (sha1 of the bytes, flags)} of user's folder."""
    conn = server.imap(user)
    try:
        typ, data = conn.select(folder, readonly=True)
        cyruslab.check_ok(typ, data, "EXAMINE")
        if int(data[0]) == 0:
            return {}
        typ, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        cyruslab.check_ok(typ, data, "FETCH")
        result = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1)
            result[uid] = (hashlib.sha1(item[1]).hexdigest(),
                           sorted(flags.decode().split()))
        return result
    finally:
        conn.logout()


def fetch_bytes(server, user, uid):
    conn = server.imap(user)
    try:
        typ, data = conn.select("INBOX", readonly=True)
        cyruslab.check_ok(typ, data, "EXAMINE")
        typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
        cyruslab.check_ok(typ, data, "FETCH")
        return [item[1] for item in data if isinstance(item, tuple)][0]
    finally:
        conn.logout()


def imap_steps(source, steps):
    with source.imap(USER) as conn:
        for what, step in steps:
            labmail.check_ok(*step(conn), what)


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        replica = lab.add_replica()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, [USER], messages=8, sieve=False)
        r = source.sync_client(users=[USER], channel="cairn")
        expect(r.ok, "sync_client -u %s (the state at T)" % USER, r)
        at_t = int(time.time())
        want_t = source.snapshot(users=[USER])
        bytes_t = contents(source, USER)
        # the log's times are in seconds: changes after T need a later one
        while int(time.time()) <= at_t:
            time.sleep(0.1)
        work = "INBOX%sWork" % lab.separator
        imap_steps(source, [
            ("DELETE", lambda c: c.delete(work)),
            ("SELECT", lambda c: c.select("INBOX")),
            ("STORE", lambda c: c.uid("STORE", "3", "-FLAGS.SILENT",
                                      r"(\Seen)")),
            ("STORE", lambda c: c.uid("STORE", "5", "+FLAGS.SILENT",
                                      r"(\Flagged)")),
            ("STORE", lambda c: c.uid("STORE", "6", "+FLAGS.SILENT",
                                      r"(\Deleted)")),
            ("EXPUNGE", lambda c: c.expunge())])
        source.deliver(USER, labmail.make_message(USER, 99, 3000,
                                                  subject="M"))
        r = source.sync_client(users=[USER], channel="cairn")
        expect(r.ok, "sync_client after Work deleted, uid 6 expunged, flags"
               " changed, M delivered", r)
        uid_m = max(messages(source, USER))
        # LMTP adds headers: the GUID is the SHA-1 of the stored bytes
        message_m = fetch_bytes(source, USER, uid_m)
        guid_m = hashlib.sha1(message_m).hexdigest()
        imap_steps(source, [
            ("SELECT", lambda c: c.select("INBOX")),
            ("STORE", lambda c: c.uid("STORE", str(uid_m), "+FLAGS.SILENT",
                                      r"(\Deleted)")),
            ("EXPUNGE", lambda c: c.expunge())])
        r = source.sync_client(users=[USER], channel="cairn")
        expect(r.ok, "sync_client after M expunged", r)

        r = timed(cluster, "user history", "user", "history", USER)
        expect(r.returncode == 0 and
               re.search(r"(UNMAILBOX|RENAME) \S*Work", r.stdout) and
               len(r.stdout.splitlines()) >= 3,
               "user history lists the points and Work's deletion",
               r.stdout + r.stderr)
        print(r.stdout)
        r = timed(cluster, "user history --mailbox", "user", "history",
                  "--mailbox", "Work", USER)
        expect(r.returncode == 0 and "Work" in r.stdout and
               not re.search(r"MAILBOX user\.%s(,|$)" % USER, r.stdout,
                             re.M),
               "history --mailbox Work: only Work's changes",
               r.stdout + r.stderr)
        print(r.stdout)

        password_file = os.path.join(lab.dir, "restore.pw")
        with open(password_file, "w") as f:
            f.write(cyruslab.REPLICATION_PASSWORD + "\n")
        os.chmod(password_file, 0o600)
        server = "127.0.0.1:%d" % replica.ports["csync"]
        common = ["--user", USER, "--server", server, "--authname",
                  cyruslab.REPLICATION_USER, "--password-file", password_file,
                  "--no-meta", "--timeout", "30"]

        r = timed(cluster, "restore --as-of 2000-01-01", "restore", *common,
                  "--as-of", "2000-01-01")
        expect(r.returncode != 0 and
               "oldest restorable time" in r.stderr,
               "an --as-of before the log fails naming the oldest time",
               r.stderr)
        r = timed(cluster, "restore --as-of now --dry-run", "restore",
                  *common, "--as-of", "now", "--dry-run")
        expect(r.returncode == 0 and "Work" not in r.stdout and
               "mailbox" in r.stdout,
               "as of now: Work is not planned", r.stdout + r.stderr)
        r = timed(cluster, "restore --as-of T (whole user)", "restore",
                  *common, "--json", "--as-of", "@%d" % at_t)
        summary = json.loads(r.stdout or "{}")
        expect(r.returncode == 0 and summary.get("ok"),
               "restore --as-of T into the replica", r.stdout + r.stderr)
        got = replica.snapshot(users=[USER])
        expect(sorted(got) == sorted(want_t),
               "mailboxes as at T (Work back): %s" % sorted(got),
               "at T %s\nreplica %s" % (sorted(want_t), sorted(got)))
        for name in sorted(want_t):
            expect(want_t[name]["messages"] == got[name]["messages"],
                   "%s as at T: UIDs, flags, GUIDs (%d messages)" % (
                       name, len(got[name]["messages"])),
                   json.dumps([want_t[name], got[name]], indent=1))
        expect(contents(replica, USER) == bytes_t,
               "message bytes as at T (SHA-1)")

        before = messages(replica, USER)
        r = timed(cluster, "restore --message GUID", "restore", *common,
                  "--message", guid_m)
        after = messages(replica, USER)
        new = {u: v for u, v in after.items() if u not in before}
        expect(r.returncode == 0 and len(new) == 1 and
               list(new.values())[0][0] == guid_m and
               min(new) > max(before),
               "--message: M joins the live INBOX as a new message (uid %s)"
               % sorted(new), r.stdout + r.stderr)
        uid_n = min(before)
        r = timed(cluster, "restore --mailbox INBOX --uid N", "restore",
                  *common, "--mailbox", "INBOX", "--uid", uid_n)
        again = messages(replica, USER)
        new = {u: v for u, v in again.items() if u not in after}
        expect(r.returncode == 0 and len(new) == 1 and
               list(new.values())[0][0] == before[uid_n][0],
               "--mailbox INBOX --uid %d: that message joins INBOX again"
               % uid_n, r.stdout + r.stderr)
        r = timed(cluster, "restore --message (unknown)", "restore", *common,
                  "--message", "0" * 40)
        expect(r.returncode != 0 and "FAILED" in r.stderr,
               "--message of a GUID not in the backup fails saying why",
               r.stderr)

        out = os.path.join(lab.dir, "m.eml")
        r = timed(cluster, "user dump message", "user", "dump", "message",
                  USER, guid_m, stdout=out)
        with open(out, "rb") as f:
            dumped = f.read()
        expect(r.returncode == 0 and dumped == message_m and
               hashlib.sha1(dumped).hexdigest() == guid_m,
            "user dump message writes M's bytes (%d)" % len(dumped),
            r.stderr)
        for what, seconds, command in TIMES:
            print("# %-32s %6.2f s  %s" % (what, seconds, command))
        cluster.stop()
    print("test_restore_grain: passed in %.1fs" %
          (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
