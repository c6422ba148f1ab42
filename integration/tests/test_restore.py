#!/usr/bin/env python3
"""Round trip through real Cyrus: SOURCE -> backupd -> restore -> REPLICA.

Two users get cyruslab.populate()'s mail, folders, a move, flags, an
expunge, an ACL and shared seen state; a first backup runs per user
(`sync_client -u`), more changes go out in one rolling pass over the sync
log (`sync_client -R -1`), and a last message through a rolling
`sync_client -R` left running.  `restore -U -a` then puts each user into
the REPLICA's sync_server, whose mailboxes (uniqueid, UIDVALIDITY, UIDNEXT,
HIGHESTMODSEQ, UIDs, GUIDs, flags, sizes) must equal the source's.
Cyrus's restore sends only RESERVE/MESSAGE/MAILBOX: subscriptions, sieve
scripts and non-owner seen state are not restored, so not compared.
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["dave", "erin"]
COMPARED = ("uniqueid", "uidvalidity", "uidnext", "highestmodseq",
            "messages")


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def later_changes(source):
    """A new message, a flag set and a flag cleared, for each user."""
    for user in USERS:
        source.deliver(user, cyruslab.make_message(user, 7))
        with source.imap(user) as conn:
            for command in (lambda: conn.select("INBOX"),
                            lambda: conn.uid("STORE", "1", "+FLAGS",
                                             r"(\Flagged)"),
                            lambda: conn.uid("STORE", "3", "-FLAGS",
                                             r"(\Seen)")):
                cyruslab.check_ok(*command(), "IMAP")


def wait_for_messages(backup, user, count, timeout=20):
    """The GUIDs backupd holds for user, once there are count (or at the
    timeout): rolling replication takes a moment."""
    deadline = time.monotonic() + timeout
    while True:
        guids = {m["guid"] for box in backup.mailboxes(user)
                 for m in box["messages"]}
        if len(guids) >= count or time.monotonic() > deadline:
            return guids
        time.sleep(0.2)


def comparable(snapshot):
    return {name: {k: state[k] for k in COMPARED}
            for name, state in snapshot.items()}


def main():
    cyruslab.skip_unless_runnable()
    with cyruslab.Lab() as lab:
        backup = lab.add_backup()
        replica = lab.add_replica()
        source = lab.add_source(channels={"backup": backup.csync_address})
        lab.start()
        # 6 messages, folders, a move, flags, an expunge, an ACL, seen
        cyruslab.populate(source, USERS, messages=6)
        for user in USERS:
            r = source.sync_client(users=[user], channel="backup")
            expect(r.ok, "sync_client -u %s" % user, r)
        later_changes(source)
        r = source.sync_client(channel="backup", rolling_once=True)
        expect(r.ok, "one rolling pass (sync_client -R -1)", r)
        rolling = source.start_rolling_sync("backup")
        for user in USERS:
            source.deliver(user, cyruslab.make_message(user, 8))
        for user in USERS:
            guids = wait_for_messages(backup, user, 8)
            expect(len(guids) == 8, "rolling sync_client -R brought %s's "
                   "8th message to backupd" % user, sorted(guids))
        rolling.stop()
        expect(not rolling.running, "rolling sync_client stopped",
               rolling.output())
        for user in USERS:
            r = backup.restore(user, replica)
            expect(r.ok, "restore -U -a %s into the replica" % user, r)
        want = comparable(source.snapshot(users=USERS))
        got = comparable(replica.snapshot(users=USERS))
        expect(got == want, "replica holds what the source holds",
               "source:\n%s\nreplica:\n%s" % (json.dumps(want, indent=1),
                                             json.dumps(got, indent=1)))
    print("test_restore: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
