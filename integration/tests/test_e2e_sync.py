#!/usr/bin/env python3
"""Real Cyrus 3.6 sync_client -> cairn-router -> 3 cairn-nodes (2 replicas),
compared with a real backupd fed by the same source.

One setup (a cyruslab SOURCE with channels "cairn" and "backup", a Cyrus
BACKUP running backupd, a cairncluster of 3 nodes) and these steps:
 1. `sync_client -u` of every user (dave with bodies of 200 KB and
    1.5 MB, more than one ZeroMQ frame) into cairn: each user lives on exactly
    its 2 ring replicas (catalogs vs `cairnctl ring diff`), `cairnctl
    verify -r ring` is ok and Cyrus's `ctl_backups verify` / `cyr_backup
    list all` accept every user's files on every replica.
 2. The same users into backupd (`-u` per user): cairn's indexes equal
    backupd's column by column (mailboxes, records, messages, seen,
    subscriptions, sieve), bodies equal by GUID, `cyr_backup json
    mailboxes` equal, and both match the source's own snapshot.
 3. A second `sync_client -u` with no new mail sends no APPLY MESSAGE
    (router debug log) and stores no new body (message rows, file sizes).
 4. Incremental: new mail, flags, an expunge, a folder renamed, a folder
    deleted; sync again; compare again.
 5. Rolling (`-R -1`, the channel's sync log) after a cross-user rename
    (admin RENAME user.a.X user.b.Y): the router refuses the multi-user
    GET MAILBOXES with NO IMAP_PROTOCOL_BAD_PARAMETERS, sync_client
    promotes to per-user syncs, and everything compares equal again.

usage: test_e2e_sync.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["alice", "bob", "carol", "dave"]
FIGURES = []


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def figure(text):
    FIGURES.append(text)
    print("# " + text)


def first_replica_files(cluster, users):
    """{user: data file on the user's first ring replica}."""
    placement = cluster.ring_replicas(users)
    files = cluster.user_files()
    return {u: files[placement[u][0]][u] for u in users}


def check_placement_and_verify(cluster, users, step):
    """Step 1's assertions (also repeated after later steps)."""
    placement = cluster.ring_replicas(users)
    holders = cluster.holders()
    for user in users:
        expect(holders.get(user) == sorted(placement[user]),
               "%s: %s is on exactly its ring replicas %s"
               % (step, user, placement[user]),
               "catalogs say %r" % holders.get(user))
    r = cluster.cairnctl("verify", "-q", "-r", cluster.ring_file, *users)
    expect(r.returncode == 0, "%s: cairnctl verify -r ring: all replicas ok "
           "and agree" % step, r.stdout + r.stderr)
    files = cluster.user_files()
    for node in cluster.node_names:
        mapping = {u: p for u, p in files[node].items() if u in users}
        if not mapping:
            continue
        report = backupcheck.check_backup_files(mapping)
        expect(report.accepted, "%s: Cyrus's ctl_backups verify + cyr_backup "
               "list accept %s's files of %s" % (step, node,
                                                 sorted(mapping)),
               "\n".join("%s: %s\n%s" % (u, c.verify_status, c.list_result)
                         for u, c in report.users.items()) + report.log)


def compare_with_backupd(cluster, backup, users, step):
    """cairn's index and bodies (every replica) vs backupd's."""
    backupd_files = backup.backup_files()
    cairn_files = cluster.user_files()
    placement = cluster.ring_replicas(users)
    for user in users:
        want = cairncluster.index_state(backupd_files[user])
        want_bodies = cairncluster.message_bodies(backupd_files[user])
        for node in placement[user]:
            path = cairn_files[node][user]
            got = cairncluster.index_state(path)
            differences = cairncluster.index_differences(want, got)
            expect(not differences, "%s: %s on %s: index equals backupd's "
                   "(%d mailboxes, %d records, %d messages, %d seen, %d subs,"
                   " %d sieve)" % (
                       step, user, node, len(want["mailboxes"]),
                       sum(len(b["records"])
                           for b in want["mailboxes"].values()),
                       len(want["messages"]), len(want["seen"]),
                       len(want["subscriptions"]), len(want["sieve"])),
                   "\n".join(differences[:40]))
            got_bodies = cairncluster.message_bodies(path)
            expect(set(got_bodies) == set(got["messages"]) and
                   {g: got_bodies[g] for g in want["messages"]} ==
                   {g: want_bodies[g] for g in want["messages"]},
                   "%s: %s on %s: the %d bodies equal backupd's byte for byte"
                   % (step, user, node, len(want["messages"])),
                   "cairn %s\nbackupd %s" % (sorted(got_bodies),
                                             sorted(want_bodies)))
    ours = backupcheck.backup_mailboxes(first_replica_files(cluster, users))
    for user in users:
        theirs = without_times(backup.mailboxes(user))
        expect(without_times(ours[user]) == theirs,
               "%s: %s: cyr_backup json mailboxes equal on cairn and backupd "
               "(expunge times aside: each server stamps its own)"
               % (step, user), "cairn %r\nbackupd %r" % (ours[user], theirs))


def without_times(mailboxes):
    """cyr_backup json mailboxes, sorted, with "expunged" (the time the
    backup server stored the expunge) reduced to True."""
    result = []
    for box in sorted(mailboxes, key=lambda b: b["uniqueid"]):
        messages = [dict(m, expunged=True) if "expunged" in m else m
                    for m in box.get("messages", [])]
        result.append(dict(box, messages=messages))
    return result


def compare_with_source(lab, source, cluster, users, step):
    """Each live user mailbox of the source vs the first replica's index:
    name, uniqueid, UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT-1 = LAST_UID, and
    the unexpunged records' UIDs, GUIDs and flags."""
    snapshot = source.snapshot(users=users)
    files = first_replica_files(cluster, users)
    stored = {}
    for user in users:
        for uniqueid, box in cairncluster.index_state(
                files[user])["mailboxes"].items():
            if not box["deleted"] and not box["mboxname"].startswith(
                    "DELETED."):
                stored[box["mboxname"]] = (uniqueid, box)
    expect(sorted(stored) == sorted(snapshot), "%s: cairn holds the source's "
           "%d mailboxes" % (step, len(snapshot)),
           "source %s\ncairn %s" % (sorted(snapshot), sorted(stored)))
    for name, want in sorted(snapshot.items()):
        uniqueid, box = stored[name]
        messages = [{"uid": r["uid"], "guid": r["guid"],
                     "flags": sorted(r["flags"].strip("()").split())}
                    for r in box["records"] if not r["expunged"]]
        got = {"uniqueid": uniqueid, "uidvalidity": box["uidvalidity"],
               "uidnext": box["last_uid"] + 1,
               "highestmodseq": box["highestmodseq"], "messages": messages}
        want = dict(want, messages=[{k: m[k] for k in ("uid", "guid",
                                                        "flags")}
                                    for m in want["messages"]])
        expect(got == want, "%s: %s equals the source (%d messages)"
               % (step, name, len(messages)),
               "source %r\ncairn  %r" % (want, got))


def sync_both(source, users, step):
    r = source.sync_client(users=users, channel="cairn")
    expect(r.ok, "%s: sync_client -u %s into cairn exits 0 (%.2fs)"
           % (step, " ".join(users), r.seconds), r)
    total = 0.0
    for user in users:
        r = source.sync_client(users=[user], channel="backup")
        expect(r.ok, "%s: sync_client -u %s into backupd" % (step, user), r)
        total += r.seconds
    figure("%s: sync_client -u into backupd took %.2fs over %d runs"
           % (step, total, len(users)))


def applied_messages(cluster):
    return len(re.findall(r"APPLY MESSAGE", cluster.router_log()))


def second_run_sends_nothing(source, cluster, users):
    """Step 3."""
    before_log = applied_messages(cluster)
    before_sizes = cluster.data_file_bytes()
    before_rows = {(n, u): len(cairncluster.index_state(p)["messages"])
                   for n, files in cluster.user_files().items()
                   for u, p in files.items()}
    r = source.sync_client(users=users, channel="cairn")
    expect(r.ok, "step 3: second sync_client -u exits 0 (%.2fs)" % r.seconds,
           r)
    after_sizes = cluster.data_file_bytes()
    after_rows = {(n, u): len(cairncluster.index_state(p)["messages"])
                  for n, files in cluster.user_files().items()
                  for u, p in files.items()}
    sent = applied_messages(cluster) - before_log
    grown = sum(after_sizes[k] - before_sizes[k] for k in before_sizes)
    figure("step 3: second -u run: %d APPLY MESSAGE at the router, data files "
           "grew by %d bytes in all (%d files, %d bytes before)"
           % (sent, grown, len(before_sizes), sum(before_sizes.values())))
    expect(sent == 0, "step 3: the second run sent no APPLY MESSAGE")
    expect(after_rows == before_rows, "step 3: no message row added on any "
           "replica", "%r\n%r" % (before_rows, after_rows))


def incremental_changes(lab, source):
    """Step 4's changes on the source."""
    sep = lab.separator
    source.deliver("alice", cyruslab.make_message("alice", 20),
                   cyruslab.make_message("alice", 21))
    source.deliver("carol", cyruslab.make_message("carol", 20))
    with source.imap("bob") as conn:
        cyruslab.check_ok(*conn.select("INBOX"), "SELECT")
        cyruslab.check_ok(*conn.uid("STORE", "1", "+FLAGS.SILENT",
                                    r"(\Flagged $Later)"), "STORE")
        cyruslab.check_ok(*conn.uid("STORE", "3", "-FLAGS.SILENT",
                                    r"(\Seen)"), "STORE")
        cyruslab.check_ok(*conn.uid("STORE", "4", "+FLAGS.SILENT",
                                    r"(\Deleted)"), "STORE")
        cyruslab.check_ok(*conn.expunge(), "EXPUNGE")
    with source.imap("carol") as conn:
        cyruslab.check_ok(*conn.rename("INBOX%sWork" % sep,
                                       "INBOX%sProjects" % sep), "RENAME")
    with source.imap("dave") as conn:
        cyruslab.check_ok(*conn.delete("INBOX%sWork" % sep), "DELETE")


def rolling_cross_user(lab, source, cluster, backup):
    """Step 5."""
    old = lab.user_mailbox("alice", "Archive")
    new = lab.user_mailbox("bob", "FromAlice")
    with source.imap() as conn:
        cyruslab.check_ok(*conn.rename(old, new), "admin RENAME across users")
    source.deliver("carol", cyruslab.make_message("carol", 30))
    log_path = os.path.join(source.dir, "conf", "sync", "cairn", "log")
    with open(log_path) as f:
        log = f.read()
    expect("RENAME" in log and old in log and new in log,
           "step 5: the cairn channel's sync log has the cross-user rename",
           log)
    offset = len(cluster.router_log())
    r = source.sync_client(channel="cairn", rolling_once=True)
    expect(r.ok, "step 5: sync_client -R -1 -n cairn exits 0 (%.2fs)"
           % r.seconds, r)
    log = cluster.router_log()[offset:]
    refused = log.count("GET MAILBOXES refused: names several users")
    expect(refused > 0, "step 5: the router refused %d multi-user GET "
           "MAILBOXES (NO IMAP_PROTOCOL_BAD_PARAMETERS, as the raw client "
           "sees in test_e2e_bad_input)" % refused, log[-3000:])
    after = log[log.index("GET MAILBOXES refused"):]
    for user in ("alice", "bob"):
        expect(re.search(r"GET USER.* user=%s\b" % user, after),
               "step 5: sync_client promoted to a per-user sync of %s "
               "(GET USER after the refusal)" % user, after[-3000:])
    figure("step 5: rolling pass %.2fs, %d multi-user GET MAILBOXES refused"
           % (r.seconds, refused))
    r = source.sync_client(channel="backup", rolling_once=True)
    expect(r.ok, "step 5: sync_client -R -1 -n backup exits 0", r)


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        backup = lab.add_backup()
        source = lab.add_source(channels={"backup": backup.csync_address,
                                          "cairn": cluster.csync_address})
        lab.start()
        cyruslab.populate(source, USERS, messages=6)
        # bodies past the node's in-message limit (64K) and past one
        # ZeroMQ frame ([limits] max_frame, 1M): streamed in pieces
        source.deliver("dave", cyruslab.make_message("dave", 50, 200000),
                       cyruslab.make_message("dave", 51, 1500000))
        figure("setup: %.1fs" % (time.monotonic() - STARTED))

        sync_both(source, USERS, "step 1")
        log = cluster.router_log()
        expect("login: repluser SCRAM-SHA-512" in log and
               "COMPRESS DEFLATE active" in log,
               "step 1: sync_client logged in with SCRAM-SHA-512 and "
               "switched on COMPRESS DEFLATE", log[-2000:])
        check_placement_and_verify(cluster, USERS, "step 1")
        total, per_node = cluster.data_bytes()
        figure("step 1: cairn holds %d bytes (data + index) over %s"
               % (total, per_node))
        compare_with_backupd(cluster, backup, USERS, "step 2")
        compare_with_source(lab, source, cluster, USERS, "step 2")
        second_run_sends_nothing(source, cluster, USERS)

        incremental_changes(lab, source)
        sync_both(source, USERS, "step 4")
        compare_with_backupd(cluster, backup, USERS, "step 4")
        compare_with_source(lab, source, cluster, USERS, "step 4")

        rolling_cross_user(lab, source, cluster, backup)
        compare_with_backupd(cluster, backup, USERS, "step 5")
        compare_with_source(lab, source, cluster, USERS, "step 5")
        check_placement_and_verify(cluster, USERS, "step 5")
        statuses = cluster.stop()
        expect(all(s == 0 for s in statuses.values()),
               "router and nodes exit 0 on SIGTERM %s" % statuses)
    print("test_e2e_sync: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
