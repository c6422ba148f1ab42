#!/usr/bin/env python3
"""Issue 9: after `cairnctl compact`, every file must still be valid for
Cyrus 3.6.1 (`ctl_backups -v verify -f FILE`) and hold the same live data.

A real sync_client backs 6 users up into 3 cairn-nodes (2 replicas per
user): `-u` of every user, `-A`, `-A` again.  Then ordinary changes, each
batch replicated by `sync_client -R -1` or `-u`, so that later batches
travel as delta MAILBOX lines (SINCE_MODSEQ):
  round 1 (-R -1): new mail; `\\Flagged $Label1` + an expunge (the expunge
    reaches cairn as a delta); a folder created and messages COPYed into it
    newest-first; one message APPENDed twice with identical bytes (one GUID
    at two UIDs of one folder); a message synced before its expunge;
  round 2 (-u): one of the duplicates expunged; the message synced in
    round 1 expunged (expunged after a sync); a folder renamed; a folder
    deleted; a folder deleted and re-created with the same name;
    subscribe/unsubscribe; owner and non-owner \\Seen; a sieve upload;
  round 3 (-R -1): new mail, flags, and a message delivered and expunged
    with no sync in between (its first record is already expunged).
Before compaction every replica's pair passes Cyrus's `ctl_backups -v
verify -f` (exit 0, nothing missing, no line its reader cannot parse) and
`cairnctl verify --full`; Cyrus's view of each file (`cyr_backup -f FILE
json mailboxes` / `json messages`) must equal the source's live mailboxes,
UIDs and GUIDs, and a Cyrus `restore -U -f FILE UNIQUEID...` of each user's
live mailboxes into a real replica must equal the source.  Then
`[compaction] retention = 1s, min_chunk = 1M` is written to cluster.conf,
the nodes reload on SIGHUP (their log line is waited for), the clock is
waited on until 2 s past the last expunge/delete the indexes hold, and
`cairnctl compact` runs.  After it, every check is made and every failure
is reported (not only the first): Cyrus's verify of every file,
`cairnctl verify --full`, Cyrus's view of the live mailboxes and messages
equal to before (and cairn's index: UIDs, GUIDs, flags), and a Cyrus
restore of each compacted file (both ring positions) into a fresh replica
equal to the restore of the uncompacted files (mailboxes, UIDs, flags,
GUIDs, sizes, bytes, internaldates) and to the source.
Figures: bytes and chunks before/after per file.

Known limits of Cyrus's format and tools, the same with backupd, left out
of the comparisons with the source (not of those before/after):
 * restore by uniqueid, not `-a`: `-a` also restores deleted mailboxes under
   their old names (a deleted and re-created folder comes back merged);
 * the restore is compared with the source by GUID: Cyrus's restore sends
   records in message-id order and sync_server renumbers a folder filled
   newest-first; UIDs are compared on Cyrus's view of the files instead;
 * dave's twin (one GUID at two UIDs, one expunged): the index keeps one
   row per mailbox and GUID, and cairn keeps it on the live UID (a
   backupd index takes the expunged one), so it is compared like the rest.

usage: test_compact_cyrus.py [--router P] [--node P] [--cairnctl P]
                             [--evidence DIR]
--evidence DIR keeps every replica's data+index pair before and after
compaction (DIR/before/NODE/USER, DIR/after/NODE/USER) and Cyrus's verify
output of each.  Exit 77 (ctest SKIP) when not root or Cyrus is missing.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
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
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
RELOADED = "SIGHUP: configuration reloaded"
FAILURES = []
# The same bytes APPENDed twice to one folder, then one copy expunged.
# Cyrus's index keeps one mailbox_message row per (mailbox, GUID) (backupd
# too): after the expunge the row says "expunged", so the live copy is not
# in any Cyrus-format backup.  Left out of the comparisons with the source
# (a limit of the format, not of compaction); printed.
BY_GUID_FIELDS = "uniqueid, UIDVALIDITY, GUIDs with flags and sizes"
TWIN = labmail.make_message("dave", 40, subject="the same bytes twice")
TWIN_GUID = hashlib.sha1(TWIN).hexdigest()


def expect(condition, what, detail=""):
    """A step the rest depends on: stop at once when it fails."""
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def check(condition, what, detail=""):
    """An assertion after compaction: recorded, the test goes on so that
    every file's verdict is seen; main() fails at the end."""
    if condition:
        print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))
        return True
    FAILURES.append(what)
    print("not ok - %s (%.1fs)\n%s" % (what, time.monotonic() - STARTED,
                                       detail.rstrip()))
    return False


def figure(text):
    print("# " + text)


# ------------------------------------------------------------- the changes

def imap_steps(source, user, steps):
    with source.imap(user) as conn:
        for what, step in steps:
            cyruslab.check_ok(*step(conn), "%s (%s)" % (what, user))


def append(conn, folder, message):
    return conn.append(folder, None, '"01-Jun-2025 12:00:00 +0000"', message)


def sync(source, step, rolling):
    if rolling:
        r = source.sync_client(channel="cairn", rolling_once=True)
        how = "-R -1"
    else:
        r = source.sync_client(users=USERS, channel="cairn")
        how = "-u " + " ".join(USERS)
    expect(r.ok, "%s: sync_client %s exits 0 (%.2fs)" % (step, how,
                                                         r.seconds), r)


def initial_backup(source):
    labmail.populate(source, USERS, messages=6)
    sync(source, "initial", rolling=False)
    for n in (1, 2):
        r = source.sync_client(channel="cairn", all_users=True)
        expect(r.ok, "initial: sync_client -A (run %d) exits 0" % n, r)


def round_one(lab, source):
    sep = lab.separator
    copies = "INBOX%sCopies" % sep
    source.deliver("alice", labmail.make_message("alice", 20),
                   labmail.make_message("alice", 21))
    imap_steps(source, "bob", [
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "1", "+FLAGS.SILENT",
                                  r"(\Flagged $Label1)")),
        ("STORE", lambda c: c.uid("STORE", "3", "+FLAGS.SILENT",
                                  r"(\Deleted)")),
        ("EXPUNGE", lambda c: c.expunge())])
    # newest first: the copies get UIDs in the reverse order of the INBOX's
    imap_steps(source, "carol", [
        ("CREATE", lambda c: c.create(copies)),
        ("SELECT", lambda c: c.select("INBOX"))] + [
        ("COPY", lambda c, uid=uid: c.uid("COPY", str(uid), copies))
        for uid in (5, 4, 3, 1)])
    imap_steps(source, "dave", [
        ("APPEND", lambda c: append(c, "INBOX", TWIN)),
        ("APPEND", lambda c: append(c, "INBOX", TWIN))])
    source.deliver("frank", labmail.make_message("frank", 30))


def round_two(lab, source):
    sep = lab.separator
    work, archive = "INBOX%sWork" % sep, "INBOX%sArchive" % sep
    projects = "INBOX%sProjects" % sep
    imap_steps(source, "dave", [
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "7", "+FLAGS.SILENT",
                                  r"(\Deleted)")),
        ("EXPUNGE", lambda c: c.expunge())])
    imap_steps(source, "frank", [
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "7", "+FLAGS.SILENT",
                                  r"(\Deleted)")),
        ("EXPUNGE", lambda c: c.expunge())])
    imap_steps(source, "alice", [
        ("RENAME", lambda c: c.rename(work, projects)),
        ("SUBSCRIBE", lambda c: c.subscribe(archive)),
        ("UNSUBSCRIBE", lambda c: c.unsubscribe(projects))])
    imap_steps(source, "erin", [
        ("DELETE", lambda c: c.delete(work)),
        ("CREATE", lambda c: c.create(work)),
        ("APPEND", lambda c: append(c, work,
                                    labmail.make_message("erin", 41))),
        ("DELETE", lambda c: c.delete(archive))])
    imap_steps(source, "bob", [  # owner \Seen
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "4", "+FLAGS.SILENT",
                                  r"(\Seen)"))])
    # non-owner \Seen: carol reads bob's Archive (populate shares it)
    imap_steps(source, "carol", [
        ("SELECT", lambda c: c.select('"%s"' % lab.user_mailbox("bob",
                                                                "Archive"))),
        ("STORE", lambda c: c.store("1", "-FLAGS.SILENT", r"(\Seen)"))])
    client = source.sieve("carol")
    try:
        client.put_script("second", 'require ["fileinto"];\nkeep;\n')
        client.set_active("second")
    finally:
        client.close()


def round_three(lab, source):
    source.deliver("alice", labmail.make_message("alice", 22))
    imap_steps(source, "alice", [
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "1", "+FLAGS.SILENT",
                                  r"(\Flagged)"))])
    source.deliver("bob", labmail.make_message("bob", 31))
    imap_steps(source, "bob", [  # expunged before any sync saw it
        ("SELECT", lambda c: c.select("INBOX")),
        ("STORE", lambda c: c.uid("STORE", "7", "+FLAGS.SILENT",
                                  r"(\Deleted)")),
        ("EXPUNGE", lambda c: c.expunge())])
    source.deliver("carol", labmail.make_message("carol", 32))


# ------------------------------------------------- Cyrus's tools on files

class CyrusTools:
    """A tools-only Cyrus backup instance: copies of cairn's pairs under
    its data_dir, Cyrus's verify, cyr_backup and restore run on them."""

    def __init__(self, lab):
        self.tools = lab.add_tools_only("tools")

    def install(self, label, path):
        """Copy path and path.index to data_dir/label/; the copy's path."""
        target = os.path.join(self.tools.data_dir, label)
        os.makedirs(target, exist_ok=True)
        copy = os.path.join(target, os.path.basename(path))
        shutil.copyfile(path, copy)
        shutil.copyfile(path + ".index", copy + ".index")
        cyruslab.chown_cyrus(self.tools.data_dir)
        return copy

    def verify(self, copy):
        return self.tools.run_tool("ctl_backups", "-v", "verify", "-f", copy,
                                   timeout=60)

    def json(self, copy, what):
        r = self.tools.run_tool("cyr_backup", "-f", copy, "json", what,
                                timeout=60)
        if not r.ok:
            raise cyruslab.LabError(str(r))
        return json.loads(r.stdout)

    def restore(self, copy, replica):
        return self.tools.restore(copy, replica, mode="-f")


def cyrus_accepts(verify):
    """Cyrus's verify of one file passed: exit 0, nothing missing, and its
    line reader parsed every line it read (on a line it cannot parse it
    prints "didn't parse dlist" on stderr and stops reading the chunk, so
    a later line's rows are "missing"; Cyrus's reindex drops them)."""
    return (verify.returncode == 0 and "missing" not in verify.stdout and
            "didn't parse" not in verify.stderr and
            "expected newline" not in verify.stderr)


def replica_files(cluster):
    """{(node, user): data file} of every replica of every user."""
    return {(node, user): path
            for node, files in cluster.user_files().items()
            for user, path in files.items() if user in USERS}


def chunk_count(path):
    db = sqlite3.connect("file:%s?mode=ro" % (path + ".index"), uri=True)
    try:
        return db.execute("SELECT count(*) FROM chunk").fetchone()[0]
    finally:
        db.close()


def last_removal(paths):
    """The latest expunge/delete/unsubscribe stamp the indexes hold."""
    latest = 0
    for path in paths:
        db = sqlite3.connect("file:%s?mode=ro" % (path + ".index"), uri=True)
        try:
            for sql in ("SELECT max(expunged) FROM mailbox_message",
                        "SELECT max(deleted) FROM mailbox",
                        "SELECT max(unsubscribed) FROM subscription",
                        "SELECT max(deleted) FROM sieve"):
                value = db.execute(sql).fetchone()[0]
                latest = max(latest, value or 0)
        finally:
            db.close()
    return latest


def live_view(mailboxes):
    """Cyrus's `json mailboxes` of a file reduced to live data: the
    mailboxes not deleted, each with its unexpunged messages (uid, guid),
    by uniqueid."""
    view = {}
    for box in mailboxes:
        if box.get("deleted") or box["mboxname"].startswith("DELETED."):
            continue
        messages = sorted((m["uid"], m["guid"]) for m in box.get("messages",
                                                                 [])
                          if not m.get("expunged"))
        view[box["uniqueid"]] = {"mboxname": box["mboxname"],
                                 "messages": messages}
    return view


def live_index(path):
    """cairn's index of a file, live mailboxes and records with flags."""
    return cairncluster.snapshot_from_index(cairncluster.index_state(path))


def restored_view(replica):
    """What a restore put in a replica: snapshot (without uidnext and
    highestmodseq) and the message bytes per mailbox."""
    snap = replica.snapshot(users=USERS)
    boxes = {name: {k: box[k] for k in ("uniqueid", "uidvalidity",
                                        "messages")}
             for name, box in snap.items()}
    bodies = {user: contents(replica, user) for user in USERS}
    extras = {name: (box["uidnext"], box["highestmodseq"])
              for name, box in snap.items()}
    return boxes, bodies, extras


def save_pair(evidence, stage, node, user, path, verify=None):
    if not evidence:
        return
    target = os.path.join(evidence, stage, node)
    os.makedirs(target, exist_ok=True)
    shutil.copyfile(path, os.path.join(target, user))
    shutil.copyfile(path + ".index", os.path.join(target, user + ".index"))
    if verify is not None:
        with open(os.path.join(target, user + ".verify.txt"), "w") as f:
            f.write(str(verify))


# ---------------------------------------------------------------- phases

def check_before(cluster, tools, files, evidence):
    r = cluster.cairnctl("verify", "--full", "-q", "-r", cluster.ring_file,
                         *USERS)
    expect(r.returncode == 0, "before: cairnctl verify --full: every replica "
           "ok and agreeing", r.stdout + r.stderr)
    before = {}
    for (node, user), path in sorted(files.items()):
        copy = tools.install("before-%s" % node, path)
        v = tools.verify(copy)
        save_pair(evidence, "before", node, user, path, v)
        expect(cyrus_accepts(v), "before: ctl_backups -v verify -f accepts "
               "%s on %s (exit 0, every line parsed)" % (user, node), str(v))
        before[(node, user)] = {
            "mailboxes": live_view(tools.json(copy, "mailboxes")),
            "messages": sorted(m["guid"] for m in tools.json(copy,
                                                             "messages")),
            "index": live_index(path),
        }
    return before


def restore_into(tools, replica, label, paths, live, step):
    """Cyrus's `restore -v -U SERVER -f FILE UNIQUEID...` of each user's
    live mailboxes (by uniqueid: `-a` would also bring back deleted ones
    under their old names, merging a deleted and a re-created folder)."""
    server = "127.0.0.1:%d" % replica.ports["csync"]
    for user, path in sorted(paths.items()):
        copy = tools.install(label, path)
        # parents first: sync_server refuses user.x.Work before user.x
        uniqueids = sorted(live[user],
                           key=lambda u: live[user][u]["mboxname"])
        r = tools.tools.run_tool("restore", "-v", "-U", server, "-f", copy,
                                 *uniqueids, timeout=120)
        expect(r.ok, "%s: Cyrus restore -U -f of %s's %d live mailboxes "
               "into %s" % (step, user, len(live[user]), replica.name), r)
    return restored_view(replica)


def compact(cluster, files):
    with open(cluster.config_path, "a") as f:
        f.write("\n[compaction]\nretention = 1s\nmin_chunk = 1M\n")
    r = cluster.cairnctl("config", "check")
    expect(r.returncode == 0, "cluster.conf with [compaction] retention = 1s,"
           " min_chunk = 1M passes cairnctl config check",
           r.stdout + r.stderr)
    for name in cluster.node_names:
        daemon = cluster.daemons[name]
        seen = daemon.log().count(RELOADED)
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while daemon.log().count(RELOADED) == seen:
            expect(time.monotonic() < deadline and daemon.running,
                   "%s logs %r after SIGHUP" % (name, RELOADED),
                   daemon.log()[-2000:])
            time.sleep(0.05)
        print("ok - %s reloaded its configuration (SIGHUP)" % name)
    # a clock condition on the data: retention (1 s) must have passed for
    # the last expunge/delete the indexes hold
    latest = last_removal(files.values())
    while time.time() < latest + 2:
        time.sleep(0.1)
    figure("compact: %.1f s after the last removal stamped %d"
           % (time.time() - latest, latest))
    r = cluster.cairnctl("compact", "--json", "-q", *USERS, timeout=120)
    expect(r.returncode == 0, "cairnctl compact exits 0",
           r.stdout + r.stderr)
    report = json.loads(r.stdout)
    expect(report["summary"]["compacted"] == len(files) and
           report["summary"]["failed"] == 0,
           "cairnctl compact: %d replicas compacted, none failed"
           % len(files), r.stdout)
    return report


def check_after(cluster, tools, files, before, evidence):
    r = cluster.cairnctl("verify", "--full", "-q", "-r", cluster.ring_file,
                         *USERS)
    check(r.returncode == 0, "after: cairnctl verify --full: every replica "
          "ok and agreeing", r.stdout + r.stderr)
    rejected = []
    for (node, user), path in sorted(files.items()):
        copy = tools.install("after-%s" % node, path)
        v = tools.verify(copy)
        save_pair(evidence, "after", node, user, path, v)
        if not check(cyrus_accepts(v),
                     "after: ctl_backups -v verify -f accepts %s on %s "
                     "(exit 0, every line parsed)" % (user, node),
                     "\n".join(line for line in v.stdout.splitlines()
                               if "missing" in line or "verify" in line)
                     + "\nexit %s, stderr: %s" % (v.returncode,
                                                  v.stderr.strip())):
            rejected.append((node, user))
        want = before[(node, user)]
        got = live_view(tools.json(copy, "mailboxes"))
        check(got == want["mailboxes"],
              "after: cyr_backup json mailboxes of %s on %s: the same live "
              "mailboxes, UIDs and GUIDs as before (%d mailboxes)"
              % (user, node, len(got)),
              "before %r\nafter  %r" % (want["mailboxes"], got))
        live_guids = {g for box in want["mailboxes"].values()
                      for _, g in box["messages"]}
        got_guids = set(m["guid"] for m in tools.json(copy, "messages"))
        check(live_guids <= got_guids,
              "after: cyr_backup json messages of %s on %s: every live "
              "body is still there" % (user, node),
              "missing %s" % sorted(live_guids - got_guids))
        got_index = live_index(path)
        check(got_index == want["index"],
              "after: cairn's index of %s on %s: the same live mailboxes, "
              "UIDs, GUIDs and flags" % (user, node),
              "\n".join(cairncluster.index_differences(want["index"],
                                                       got_index)[:30]))
    figure("after: Cyrus's verify rejects %d of %d files: %s"
           % (len(rejected), len(files), rejected))
    return rejected


def compare_restores(what, want, got, fields="uniqueid, UIDVALIDITY, UIDs, "
                     "flags, GUIDs, sizes"):
    want_boxes, want_bodies, want_extras = want
    got_boxes, got_bodies, got_extras = got
    check(sorted(got_boxes) == sorted(want_boxes),
          "%s: the same mailboxes (%d)" % (what, len(want_boxes)),
          "want %s\ngot  %s" % (sorted(want_boxes), sorted(got_boxes)))
    for name in sorted(set(want_boxes) & set(got_boxes)):
        check(got_boxes[name] == want_boxes[name],
              "%s: %s: %s equal (%d messages)"
              % (what, name, fields, len(want_boxes[name]["messages"])),
              json.dumps([want_boxes[name], got_boxes[name]]))
    check(got_bodies == want_bodies,
          "%s: message bytes and internaldates equal" % what,
          "want %s\ngot  %s" % (want_bodies, got_bodies))
    differ = {n: (want_extras[n], got_extras[n]) for n in want_extras
              if n in got_extras and want_extras[n] != got_extras[n]}
    if differ:
        figure("%s: (UIDNEXT, HIGHESTMODSEQ) differ (not asserted): %s"
               % (what, differ))


def by_guid(view):
    """A restored_view() keyed by GUID instead of UID: what
    a restore must equal on the source.  Cyrus's restore sends a mailbox's
    records in message-id order (no ORDER BY in its select) and
    sync_server's RESTORE gives a new UID to one below the last, so a folder
    filled newest-first (carol's Copies) comes back renumbered; UIDs are
    compared with the source on Cyrus's view of the files instead."""
    boxes, bodies, _ = view
    guids = {name: dict(box, messages=sorted(
        (m["guid"], tuple(m["flags"]), m["size"]) for m in box["messages"]))
        for name, box in boxes.items()}
    texts = {user: {name: sorted(row[1:] for row in rows)
                    for name, rows in mailboxes.items()}
             for user, mailboxes in bodies.items()}
    return guids, texts, {}


def source_views(lab, source):
    """The source's live mail: as restored_view() (by user view names),
    and as Cyrus's view of a file ({uniqueid: {"mboxname", "messages":
    [(uid, guid)]}} per user)."""
    snap = source.snapshot(users=USERS)
    boxes = {name: {k: box[k] for k in ("uniqueid", "uidvalidity",
                                        "messages")}
             for name, box in snap.items()}
    bodies = {user: contents(source, user) for user in USERS}
    cyrus = {user: {} for user in USERS}
    for name, box in snap.items():
        cyrus[lab.mailbox_owner(name)][box["uniqueid"]] = {
            "mboxname": name,
            "messages": sorted((m["uid"], m["guid"])
                               for m in box["messages"])}
    return (boxes, bodies, {}), cyrus


def main():
    cyruslab.skip_unless_runnable()
    binaries, rest = cairncluster.binaries_from_argv()
    parser = argparse.ArgumentParser()
    parser.add_argument("--evidence", default="")
    args = parser.parse_args(rest)
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        restored_before = lab.add_replica("restored-before")
        restored_after = [lab.add_replica("restored-after%d" % (i + 1))
                          for i in range(2)]
        lab.start()
        tools = CyrusTools(lab)
        figure("setup: %.1fs" % (time.monotonic() - STARTED))

        initial_backup(source)
        round_one(lab, source)
        sync(source, "round 1", rolling=True)
        round_two(lab, source)
        sync(source, "round 2", rolling=False)
        round_three(lab, source)
        sync(source, "round 3", rolling=True)

        placement = cluster.ring_replicas(USERS)
        files = replica_files(cluster)
        expect(sorted(files) == sorted((n, u) for u in USERS
                                       for n in placement[u]),
               "every user on exactly its 2 ring replicas",
               "%r\n%r" % (sorted(files), placement))
        before = check_before(cluster, tools, files, args.evidence)
        source_state, source_cyrus = source_views(lab, source)
        for (node, user), state in sorted(before.items()):
            expect(state["mailboxes"] == source_cyrus[user],
                   "before: Cyrus's view of %s on %s (cyr_backup json "
                   "mailboxes: live mailboxes, UIDs, GUIDs) equals the source"
                   % (user, node), "source %r\nfile   %r" % (
                       source_cyrus[user], state["mailboxes"]))
        twin_rows = [m for box in before[(placement["dave"][0], "dave")][
            "mailboxes"].values() for m in box["messages"]
            if m[1] == TWIN_GUID]
        expect(len(twin_rows) == 1, "dave's twin %s (one body under 2 UIDs,"
               " 1 expunged) keeps its live UID in the backup"
               % TWIN_GUID[:12], repr(twin_rows))
        live = {u: before[(placement[u][0], u)]["mailboxes"] for u in USERS}
        restore_before = restore_into(
            tools, restored_before, "restore-before",
            {u: files[(placement[u][0], u)] for u in USERS}, live, "before")
        compare_restores("before: restore of the uncompacted files vs the "
                         "source", by_guid(source_state),
                         by_guid(restore_before), fields=BY_GUID_FIELDS)
        expect(not FAILURES, "before: the uncompacted restore equals the "
               "source", "\n".join(FAILURES))
        bytes_before = {k: os.path.getsize(p) for k, p in files.items()}
        chunks_before = {k: chunk_count(p) for k, p in files.items()}

        report = compact(cluster, files)
        files_after = replica_files(cluster)
        expect(sorted(files_after) == sorted(files),
               "after: the same replicas hold the same users")
        bytes_after = {k: os.path.getsize(p) for k, p in files_after.items()}
        chunks_after = {k: chunk_count(p) for k, p in files_after.items()}
        for key in sorted(files):
            figure("%s on %s: %d -> %d bytes, %d -> %d chunks"
                   % (key[1], key[0], bytes_before[key], bytes_after[key],
                      chunks_before[key], chunks_after[key]))
        figure("all: %d -> %d bytes, %d -> %d chunks (cairnctl: %d -> %d)"
               % (sum(bytes_before.values()), sum(bytes_after.values()),
                  sum(chunks_before.values()), sum(chunks_after.values()),
                  report["summary"]["bytes_before"],
                  report["summary"]["bytes_after"]))

        check_after(cluster, tools, files_after, before, args.evidence)
        for position, replica in enumerate(restored_after):
            paths = {u: files_after[(placement[u][position], u)]
                     for u in USERS}
            try:
                got = restore_into(tools, replica,
                                   "restore-after%d" % position, paths,
                                   live, "after")
            except AssertionError as e:
                check(False, "after: restore of ring position %d's "
                      "compacted files" % position, str(e))
                continue
            compare_restores("after: restore of ring position %d's "
                             "compacted files vs the uncompacted restore"
                             % position, restore_before, got)
            compare_restores("after: restore of ring position %d's "
                             "compacted files vs the source" % position,
                             by_guid(source_state), by_guid(got),
                             fields=BY_GUID_FIELDS)
        statuses = cluster.stop()
        check(all(s == 0 for s in statuses.values()),
              "router and nodes exit 0 on SIGTERM %s" % statuses)
        if FAILURES:
            raise AssertionError("%d checks failed after compaction:\n  %s"
                                 % (len(FAILURES), "\n  ".join(FAILURES)))
    print("test_compact_cyrus: passed in %.1fs"
          % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
