#!/usr/bin/env python3
"""Migration from a real Cyrus backupd into a cairn cluster (issue 18).

A Cyrus SOURCE replicates 8 users into a real backupd, one `sync_client -u`
per user, in three passes: the populated mail; ordinary changes (new mail,
flags, an expunge, folders created, renamed and deleted, a subscription,
seen state, a new active sieve script); and a pass that changes nothing,
for which backupd writes an empty chunk per user (so the files hold the
29-byte chunks real backups have).  Cyrus's `ctl_backups verify` accepts
every user.  Then:

 1. user008 is already in cairn (synced there directly): `cairnctl import
    --from-backupd <backupd's imapd.conf> --destination main` imports the
    other 7 and refuses user008 (a different copy on its nodes, exit 1);
    the rerun with --replace resumes from the journal (7 skipped) and
    imports user008.  backupd's files are byte for byte as before.
 2. Each user is on exactly its 2 ring replicas; Cyrus's ctl_backups
    verify accepts every replica; a Cyrus `restore -U -a` of each replica
    into a fresh sync_server equals the source (uniqueid, uidvalidity,
    UIDs, GUIDs, flags).
 3. The same source's `sync_client -A` pointed at the router (through a
    relay that records the stream): with nothing new it sends no APPLY
    MESSAGE and no APPLY MAILBOX (the imported index answers GET USER as
    backupd's did); after new mail for two users it sends exactly those
    bodies.
Prints the import's report and its users/s and MB/s.  For a figure with
real volume: `--mail-mb N` adds N MB of incompressible mail per user to
the first pass (ctest runs without it).
"""
import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
from cyruslab import make_message  # noqa: E402

USERS = ["user%03d" % i for i in range(1, 9)]
MESSAGES, SIZE = 12, 60000  # about 0.7 MB of mail a user
FAILURES = []
STARTED = time.monotonic()


def check(condition, what, detail=""):
    print("%s: %s" % ("ok" if condition else "FAIL", what))
    if not condition:
        FAILURES.append(what)
        if detail:
            print("  " + str(detail).replace("\n", "\n  "))


class Relay:
    """A TCP relay to the router's csync port recording what the client
    sends (the channel runs without COMPRESS, so it can be read)."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = self.listener.getsockname()
        self.lock = threading.Lock()
        self.sent = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            for a, b, record in ((client, server, True),
                                 (server, client, False)):
                threading.Thread(target=self._pump, daemon=True,
                                 args=(a, b, record)).start()

    def _pump(self, source, sink, record):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if record:
                with self.lock:
                    self.sent += data
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (sink, source):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        with self.lock:
            sent, self.sent = bytes(self.sent), bytearray()
        return sent

    def close(self):
        self.listener.close()


def ok(response, what):
    typ, data = response
    if typ != "OK":
        raise cyruslab.LabError("%s: %s %r" % (what, typ, data))


def changes(source, lab):
    """The ordinary changes of a day, for every user."""
    for user in USERS:
        source.deliver(user, make_message(user, MESSAGES + 1))
        with source.imap(user) as conn:
            ok(conn.select("INBOX"), "SELECT")
            ok(conn.uid("STORE", "1", "+FLAGS.SILENT", r"(\Flagged)"), "STORE")
            ok(conn.uid("STORE", "3", "+FLAGS.SILENT", r"(\Seen)"), "STORE")
            ok(conn.uid("STORE", "4", "+FLAGS.SILENT", r"(\Deleted)"),
               "STORE")
            ok(conn.expunge(), "EXPUNGE")
            ok(conn.create("INBOX.Projects"), "CREATE")
            ok(conn.create("INBOX.Tmp"), "CREATE")
            ok(conn.uid("COPY", "1", "INBOX.Projects"), "COPY")
            ok(conn.rename("INBOX.Work", "INBOX.Jobs"), "RENAME")
            ok(conn.subscribe("INBOX.Projects"), "SUBSCRIBE")
            ok(conn.delete("INBOX.Tmp"), "DELETE")
        sieve = source.sieve(user)
        try:
            sieve.put_script("later", "keep;\r\n")
            sieve.set_active("later")
        finally:
            sieve.close()


def sha1_file(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def bulk_message(user, index, size):
    """An incompressible message of about size bytes (same every run)."""
    rng = random.Random("%s/%d" % (user, index))
    body = base64.encodebytes(rng.randbytes(size * 3 // 4))
    return (b"From: bulk@example.com\r\nTo: %s@example.com\r\n"
            b"Subject: bulk %d\r\n\r\n" % (user.encode(), index)
            + body.replace(b"\n", b"\r\n"))


def backupd_phase(lab, source, backup, mail_mb):
    labmail.populate(source, USERS, messages=MESSAGES, size=SIZE)
    for user in USERS:
        for i in range(int(mail_mb)):
            source.deliver(user, bulk_message(user, i, 1 << 20))
    for step in ("first", "changes", "unchanged"):
        if step == "changes":
            changes(source, lab)
        for user in USERS:
            r = source.sync_client(users=[user], channel="backup")
            if not r.ok:
                raise cyruslab.LabError("sync_client %s: %s" % (user, r))
    verify = backup.ctl_backups("verify", *USERS)
    check(verify.ok and verify.stdout.count(": ok") == len(USERS),
          "Cyrus's ctl_backups verify accepts all 8 backupd users", verify)
    files = backup.backup_files()
    empty = 0
    for user in USERS:
        chunks = json.loads(backup.cyr_backup(user, "json", "chunks").stdout)
        empty += sum(1 for c in chunks if c["length"] == 29)
    check(empty >= len(USERS), "backupd wrote %d empty chunks (unchanged "
          "passes)" % empty)
    return files


def import_phase(cluster, backup, files, work_dir):
    before = {u: (sha1_file(p), sha1_file(p + ".index"))
              for u, p in files.items()}
    args = ["import", "--from-backupd", backup.config_path,
            "--destination", "main", "--work-dir", work_dir]
    begin = time.monotonic()
    r = cluster.cairnctl(*args, timeout=600)
    print("# first import run: %.2fs wall\n%s%s" % (
        time.monotonic() - begin, r.stdout, r.stderr))
    check(r.returncode == 1, "user008, already in cairn with other data, "
          "is refused: exit 1", r.returncode)
    check(re.search(r"^failed user008: .*holds a different backup", r.stdout,
                    re.M) is not None, "the refusal names user008 and why")
    check(len(re.findall(r"^imported user00[1-7]: verified on", r.stdout,
                         re.M)) == 7, "the other 7 users are imported")
    r = cluster.cairnctl("--json", *args, "--replace", timeout=600)
    print(r.stdout + r.stderr)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line]
    summary = lines[-1]["summary"] if lines else {}
    check(r.returncode == 0 and summary.get("imported") == 1 and
          summary.get("resumed") == 7, "rerun with --replace: user008 "
          "imported, 7 skipped by the journal", r.stdout)
    # a third run with a fresh journal finds every user present and equal
    fresh = work_dir + ".again"
    r = cluster.cairnctl("import", "--from-backupd", backup.config_path,
                         "--destination", "main", "--work-dir", fresh,
                         "--quiet", timeout=600)
    print(r.stdout)
    check(r.returncode == 0 and r.stdout.count("already present and equal")
          == len(USERS), "without the journal every user is found present "
          "and equal on its replicas")
    # backups.db named directly (twoskip, read with cyr_dbtool -C conf)
    r = cluster.cairnctl("import", "--from-backupd", backup.backups_db,
                         "--imapd-conf", backup.config_path, "--destination",
                         "main", "--work-dir", fresh + "2", "--quiet",
                         timeout=600)
    check(r.returncode == 0 and r.stdout.count("already present and equal")
          == len(USERS), "backups.db given directly lists the same 8 users",
          r.stdout + r.stderr)
    after = {u: (sha1_file(p), sha1_file(p + ".index"))
             for u, p in files.items()}
    check(before == after, "backupd's data files and indexes are untouched")


def replicas_phase(lab, source, backup, cluster):
    placement = cluster.ring_replicas(USERS)
    files = cluster.user_files()
    for user in USERS:
        holders = sorted(n for n, users in files.items() if user in users)
        check(holders == sorted(placement[user]),
              "%s on its ring replicas %s" % (user, placement[user]), holders)
    for node, users in sorted(files.items()):
        mapping = {u: p for u, p in users.items() if u in USERS}
        report = backupcheck.check_backup_files(mapping)
        check(report.accepted, "Cyrus's ctl_backups verify accepts every "
              "imported replica on %s (%d users)" % (node, len(mapping)),
              {u: c.verify_status for u, c in report.users.items()})
    want = source.snapshot(users=USERS)
    fields = ("uniqueid", "uidvalidity", "messages")
    # What Cyrus's restore makes of backupd's own files: the reference
    # (restore -a also brings back the folders deleted on the source,
    # whose DELETED.* mailboxes the backup keeps)
    reference = lab.add_replica("from-backupd")
    lab.start()
    for user in USERS:
        r = backup.restore(user, reference)
        check(r.ok, "Cyrus restore of backupd's own %s" % user, r)
    from_backupd = reference.snapshot(users=USERS)
    tools = lab.add_tools_only("tools")
    for copy in (0, 1):
        replica = lab.add_replica("restored%d" % copy)
        lab.start()
        for user in USERS:
            node = placement[user][copy]
            path = files[node][user]
            target = os.path.join(tools.data_dir, node)
            os.makedirs(target, exist_ok=True)
            dest = os.path.join(target, os.path.basename(path))
            shutil.copyfile(path, dest)
            shutil.copyfile(path + ".index", dest + ".index")
            cyruslab.chown_cyrus(tools.data_dir)
            r = tools.restore(dest, replica, mode="-f")
            check(r.ok, "Cyrus restore of %s's copy on %s" % (user, node), r)
        got = replica.snapshot(users=USERS)
        differ = {name: {k: (want[name][k], got.get(name, {}).get(k))
                         for k in fields
                         if want[name][k] != got.get(name, {}).get(k)}
                  for name in want}
        differ = {k: v for k, v in differ.items() if v}
        extra = sorted(set(got) - set(want))
        check(not differ and all(n.endswith(".Tmp") for n in extra),
              "replica copy %d of every user, restored by Cyrus, equals the "
              "source (%d mailboxes; besides, the %d folders deleted on the "
              "source, as restore -a does)" % (copy + 1, len(want),
                                               len(extra)),
              json.dumps({"differ": differ, "extra": extra},
                         indent=1)[:3000])
        check(got == from_backupd, "and equals Cyrus's restore of backupd's "
              "own files, field for field (%d mailboxes)" % len(got),
              sorted(set(got) ^ set(from_backupd)))


APPLY_MESSAGE = re.compile(rb"APPLY MESSAGE")
APPLY_MAILBOX = re.compile(rb"APPLY MAILBOX")
FILE_GUID = re.compile(rb"%\{\S+ ([0-9a-f]{40}) \d+\}")


def continue_phase(source, relay):
    relay.take()
    r = source.sync_client(channel="cairn", all_users=True, timeout=300)
    sent = relay.take()
    check(r.ok, "sync_client -A into the router after the import", r)
    check(len(APPLY_MESSAGE.findall(sent)) == 0,
          "no APPLY MESSAGE: every body backupd had is known (%d bytes "
          "sent)" % len(sent))
    check(len(APPLY_MAILBOX.findall(sent)) == 0,
          "no APPLY MAILBOX: GET USER answered as backupd's index did",
          sent[:2000])
    def guids():
        return set(m["guid"] for box in source.snapshot(users=USERS[:2])
                   .values() for m in box["messages"])

    before = guids()
    for user in USERS[:2]:
        source.deliver(user, make_message(user, MESSAGES + 2))
    added = guids() - before
    r = source.sync_client(channel="cairn", all_users=True, timeout=300)
    sent = relay.take()
    sent_guids = set(g.decode() for g in FILE_GUID.findall(sent))
    check(r.ok and len(added) == 2 and sent_guids == added,
          "after new mail for 2 users, sync_client -A uploads exactly those "
          "2 bodies (%d APPLY MESSAGE)" % len(APPLY_MESSAGE.findall(sent)),
          (sorted(sent_guids), sorted(added)))


def main():
    cyruslab.skip_unless_runnable()
    binaries, rest = cairncluster.binaries_from_argv()
    parser = argparse.ArgumentParser()
    parser.add_argument("--mail-mb", type=int, default=0)
    args = parser.parse_args(rest)
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2,
                              channel_settings={"compress": "no"}) \
            as cluster, cyruslab.Lab() as lab:
        cluster.start()
        relay = Relay(cluster.csync_address)
        try:
            backup = lab.add_backup()
            source = lab.add_source(channels={
                "backup": backup.csync_address, "cairn": relay.address})
            lab.start()
            files = backupd_phase(lab, source, backup, args.mail_mb)
            print("# backupd: %.1f MB in %d files, %.1fs" % (
                sum(os.path.getsize(p) for p in files.values()) / 1e6,
                len(files), time.monotonic() - STARTED))
            # user008 reaches cairn first, with its own (different) file
            r = source.sync_client(users=["user008"], channel="cairn")
            check(r.ok, "user008 synced straight into cairn", r)
            work = os.path.join(cluster.dir, "import-work")
            import_phase(cluster, backup, files, work)
            replicas_phase(lab, source, backup, cluster)
            continue_phase(source, relay)
        finally:
            relay.close()
        statuses = cluster.stop()
        check(all(s == 0 for s in statuses.values()),
              "router and nodes exit 0 on SIGTERM %s" % statuses)
    if FAILURES:
        print("test_import_backupd: %d check(s) failed in %.1fs:\n  %s"
              % (len(FAILURES), time.monotonic() - STARTED,
                 "\n  ".join(FAILURES)))
        return 1
    print("test_import_backupd: passed in %.1fs"
          % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
