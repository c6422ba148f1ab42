#!/usr/bin/env python3
"""Real sync_client -> real backupd, then Cyrus's tools on the result.

(a) SOURCE + BACKUP, 3 users with mail and a folder, `sync_client -u` for
    each user: `ctl_backups verify` passes for all and `cyr_backup list
    messages` shows each user's distinct messages;
(b) the backup-check helper accepts copies of backupd's own files (in
    another directory, flat names) and rejects corrupted copies.
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = {"alice": 3, "bob": 4, "carol": 5}   # user -> messages delivered


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def populate(source):
    for user, count in USERS.items():
        source.deliver(user, *[cyruslab.make_message(user, i)
                               for i in range(1, count + 1)])
        conn = source.imap(user)
        try:
            cyruslab.check_ok(*conn.create("INBOX.Work"), "CREATE")
            cyruslab.check_ok(*conn.select("INBOX"), "SELECT")
            # a copy shares its GUID: the backup still holds `count` bodies
            cyruslab.check_ok(*conn.uid("COPY", "1", "INBOX.Work"), "COPY")
            cyruslab.check_ok(*conn.uid("STORE", "2", "+FLAGS",
                                        r"(\Seen)"), "STORE")
        finally:
            conn.logout()


def backupd_round(lab, source, backup):
    """(a): returns {user: data file} of backupd's files."""
    populate(source)
    for user in USERS:
        r = source.sync_client(users=[user], channel="backup")
        expect(r.ok, "sync_client -u %s exits 0" % user, r)
    verify = backup.ctl_backups("verify", "-A")
    statuses = backupcheck.verify_statuses(verify.stdout)
    expect(verify.ok and all(statuses.get(u) == "ok" for u in USERS),
           "ctl_backups verify -A: ok for every user", verify)
    source_guids = {u: set() for u in USERS}
    for name, state in source.snapshot(users=USERS).items():
        owner = lab.mailbox_owner(name)
        source_guids[owner].update(m["guid"] for m in state["messages"])
    for user, count in USERS.items():
        r = backup.cyr_backup(user, "list", "messages")
        guids = set(re.findall(r"^([0-9a-f]{40})$", r.stdout, re.M))
        expect(r.ok and len(guids) == count,
               "cyr_backup list messages: %d messages for %s" % (count, user),
               r)
        expect(guids == source_guids[user],
               "backup GUIDs of %s equal the source's" % user,
               "%r\n%r" % (sorted(guids), sorted(source_guids[user])))
    return backup.backup_files()


def corrupt_truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-40])


def check_helper(files, scratch):
    """(b): the helper accepts backupd's files and rejects broken ones."""
    good = os.path.join(scratch, "good")
    os.makedirs(good)
    for user, path in files.items():
        shutil.copyfile(path, os.path.join(good, user))
        shutil.copyfile(path + ".index", os.path.join(good, user + ".index"))
    mapping = backupcheck.find_backup_files(good, list(USERS))
    report = backupcheck.check_backup_files(mapping)
    expect(report.accepted, "check helper accepts backupd's own files",
           "\n".join("%s: %s" % (u, c.verify_status)
                     for u, c in report.users.items()))
    # a torn tail; byte flips are in test_backup_check_testdata.py
    bad = os.path.join(scratch, "truncated")
    shutil.copytree(good, bad)
    corrupt_truncate(os.path.join(bad, "bob"))
    report = backupcheck.check_backup_files(
        backupcheck.find_backup_files(bad, list(USERS)))
    verdict = {u: c.accepted for u, c in report.users.items()}
    expect(verdict == {"alice": True, "bob": False, "carol": True},
           "check helper rejects the truncated bob only (%s)"
           % report.users["bob"].verify_status, verdict)


def main():
    cyruslab.skip_unless_runnable()
    started = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="cairn-itest-")
    try:
        with cyruslab.Lab() as lab:
            backup = lab.add_backup()
            source = lab.add_source(channels={"backup": backup.csync_address})
            lab.start()
            files = backupd_round(lab, source, backup)
            backup.stop()   # files complete and closed before copying
            check_helper(files, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("test_backupd_sync: passed in %.1fs" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
