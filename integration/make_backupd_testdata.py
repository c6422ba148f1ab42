#!/usr/bin/env python3
"""make_backupd_testdata.py -- real Cyrus backupd files for cairn's tests.

Stands up a Cyrus SOURCE and a Cyrus BACKUP (backupd), makes two users'
mail go through a fixed story in three steps, runs `sync_client -u USER`
for each user after every step (so each backup has several chunks), and a
second, unchanged pass after steps 2 and 3 (backupd writes an empty chunk
for each: the header line alone, indexed as a chunk row), checks
the result with `ctl_backups verify`, and writes to OUTDIR (default
node/tests/data/backupd):

  alice, alice.index, bob, bob.index   backupd's data files and SQLite
                                       indexes (backupd names the data file
                                       <partition>/<hash>/<user>_XXXXXX)
  manifest.json                        what the source held after each step
                                       (mailboxes, uniqueids, UIDs, GUIDs,
                                       flags, subscriptions, sieve scripts)
                                       and what backupd's index says

usage: make_backupd_testdata.py [OUTDIR]
Needs root and Debian's cyrus-imapd packages.  The messages are the same
every run; Cyrus adds timestamps and random uniqueids, so the files differ.
"""
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import cyruslab  # noqa: E402
from cyruslab import make_message  # noqa: E402

USERS = ("alice", "bob")
SIEVE_SCRIPT = """require ["fileinto"];
# cairn test data: list mail goes to Work
if header :contains "List-Id" "cairn-test" {
  fileinto "INBOX.Work";
}
"""


def step1(source):
    """First mail, folders, a copy, subscriptions, a sieve script."""
    source.deliver("alice", *[make_message("alice", i) for i in (1, 2, 3, 4)])
    source.deliver("bob", *[make_message("bob", i) for i in (1, 2)])
    with_imap(source, "alice", lambda c: (
        ok(c.create("INBOX.Work")), ok(c.create("INBOX.Old")),
        ok(c.select("INBOX")), ok(c.uid("COPY", "2", "INBOX.Work")),
        ok(c.uid("COPY", "3", "INBOX.Old")), ok(c.subscribe("INBOX")),
        ok(c.subscribe("INBOX.Work"))))
    with_imap(source, "bob", lambda c: (
        ok(c.create("INBOX.Tmp")), ok(c.select("INBOX")),
        ok(c.uid("COPY", "1", "INBOX.Tmp")), ok(c.subscribe("INBOX.Tmp"))))
    sieve = source.sieve("alice")
    try:
        sieve.put_script("cairn", SIEVE_SCRIPT)
        sieve.set_active("cairn")
    finally:
        sieve.close()
    return "mail to both users; alice: Work (copy of uid 2), Old (copy " \
        "of uid 3), subscribed INBOX+Work, sieve 'cairn' active; bob: Tmp " \
        "(copy of uid 1), subscribed Tmp"


def step2(source):
    """Flags, an expunge, more mail, an ACL and non-owner seen state."""
    source.deliver("alice", make_message("alice", 5))
    source.deliver("bob", make_message("bob", 3))
    with_imap(source, "alice", lambda c: (
        ok(c.select("INBOX")),
        ok(c.uid("STORE", "1", "+FLAGS.SILENT", r"(\Seen \Answered)")),
        ok(c.uid("STORE", "2", "+FLAGS.SILENT", r"(\Flagged $Important)")),
        ok(c.uid("STORE", "4", "+FLAGS.SILENT", r"(\Deleted)")),
        ok(c.expunge()),
        ok(c.setacl("INBOX.Work", "bob", "lrs"))))
    # bob reads alice's shared folder: \Seen of a non-owner lives in bob's
    # seen database (replicated as APPLY SEEN), not in the mailbox
    with_imap(source, "bob", lambda c: (
        ok(c.select("user.alice.Work")),
        ok(c.uid("STORE", "1", "+FLAGS.SILENT", r"(\Seen)")),
        ok(c.select("INBOX")),
        ok(c.uid("STORE", "1:2", "+FLAGS.SILENT", r"(\Seen)"))))
    return "alice: uid 1 \\Seen \\Answered, uid 2 \\Flagged $Important, " \
        "uid 4 expunged, uid 5 new, Work shared with bob (lrs); bob: uid 3 " \
        "new, uids 1-2 \\Seen, \\Seen on alice's Work uid 1 (bob's seen db)"


def step3(source):
    """A rename, a delete, an unsubscribe, a second sieve script."""
    source.deliver("alice", make_message("alice", 6))
    with_imap(source, "alice", lambda c: (
        ok(c.rename("INBOX.Old", "INBOX.Archive")),
        ok(c.subscribe("INBOX.Archive"))))
    with_imap(source, "bob", lambda c: (
        ok(c.unsubscribe("INBOX.Tmp")), ok(c.delete("INBOX.Tmp"))))
    sieve = source.sieve("bob")
    try:
        sieve.put_script("vacation", 'require ["vacation"];\n'
                         'vacation :days 7 "Away.";\n')
        sieve.set_active("vacation")
    finally:
        sieve.close()
    return "alice: Old renamed to Archive (subscribed), uid 6 new; bob: " \
        "Tmp unsubscribed and deleted, sieve 'vacation' active"


def ok(response):
    typ, data = response
    if typ != "OK":
        raise cyruslab.LabError("IMAP: %s %r" % (typ, data))
    return data


def with_imap(source, user, action):
    conn = source.imap(user)
    try:
        action(conn)
    finally:
        conn.logout()


def source_state(source):
    state = {"mailboxes": source.snapshot(users=USERS), "users": {}}
    for user in USERS:
        sieve = source.sieve(user)
        try:
            scripts = sieve.list_scripts()
        finally:
            sieve.close()
        state["users"][user] = {
            "subscriptions": source.subscriptions(user),
            "sieve": [{"name": n, "active": a} for n, a in scripts],
        }
    return state


def sync_all(source):
    for user in USERS:
        r = source.sync_client(users=[user], channel="backup")
        if not r.ok:
            raise cyruslab.LabError("sync_client failed:\n%s" % r)


def main(argv):
    cyruslab.skip_unless_runnable()
    outdir = argv[0] if argv else os.path.join(
        HERE, "..", "node", "tests", "data", "backupd")
    started = time.monotonic()
    manifest = {"cyrus": "3.6.1 (Debian 12 packages)", "users": list(USERS),
                "namespace": "standard, '.' separator (unixhierarchysep: no)",
                "steps": []}
    with cyruslab.Lab() as lab:
        backup = lab.add_backup()
        source = lab.add_source(channels={"backup": backup.csync_address})
        lab.start()
        for step in (step1, step2, step3):
            what = step(source)
            sync_all(source)
            if step is not step1:
                # A pass that changes nothing: backupd still opens a chunk
                # for the session's GET USER and ends it empty (the 29-byte
                # header alone), as in nearly every real backup.
                sync_all(source)
                what += "; then an unchanged sync pass (an empty chunk)"
            manifest["steps"].append({"name": step.__name__,
                                      "did": what,
                                      "source": source_state(source)})
        verify = backup.ctl_backups("verify", *USERS)
        if not verify.ok or verify.stdout.count(": ok") != len(USERS):
            raise cyruslab.LabError("verify failed:\n%s" % verify)
        files = backup.backup_files()
        manifest["backupd"] = {}
        for user in USERS:
            chunks = backup.cyr_backup(user, "json", "chunks")
            manifest["backupd"][user] = {
                "original_name": os.path.relpath(files[user], backup.data_dir),
                "chunks": json.loads(chunks.stdout),
                "mailboxes": backup.mailboxes(user),
            }
        backup.stop()  # backupd done: its files are complete and closed
        os.makedirs(outdir, exist_ok=True)
        for user in USERS:
            shutil.copyfile(files[user], os.path.join(outdir, user))
            shutil.copyfile(files[user] + ".index",
                            os.path.join(outdir, user + ".index"))
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %s in %.1fs" % (os.path.normpath(outdir),
                                 time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
