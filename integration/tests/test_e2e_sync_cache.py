#!/usr/bin/env python3
"""Real Cyrus 3.6 sync_client with its replication cache on sends cairn
batches that span users; cairn must still keep each user's backup to
itself.

Why a batch spans users: sync_client's rolling mode (imap/sync_support.c,
sync_do_reader) groups the sync log's mailboxes per user, but the second
name of a DOUBLEMAILBOX line (an IMAP COPY from another user's shared
folder) joins the first name's group.  Without a cache sync_client sends
GET MAILBOXES for the group, which cairn refuses when it spans users, and
sync_client falls back to one user at a time.  With the channel's
replication cache (`<channel>_sync_cache_db_path`, sync_readcache()) the
cached mailboxes are not looked up: sync_client goes straight to one
APPLY RESERVE naming every mailbox of the group, uploads each missing body
once (APPLY MESSAGE before the first APPLY MAILBOX that needs it) and then
sends the APPLY MAILBOX of every mailbox, whichever user owns it.

Setup: a cairn cluster (3 nodes, 2 replicas, COMPRESS off on its channel so
the stream can be read), a TCP relay in this script between sync_client and
the router recording both directions, a Cyrus SOURCE with sync_log and the
cache on for channels "cairn" and "backup", and a real backupd for
contrast.  Steps:
 1. 4 users with mail; `sync_client -u` of all, then one rolling pass
    (`-R -1`) that drains the sync log: the cache file exists and names
    every user mailbox.
 2. New mail: a message delivered by one LMTP transaction to carol and dave
    (one GUID in both), a 250 KB message for dave, new messages for alice
    and bob each copied to their Archive, which the other (and carol, from
    alice's) then copies into their own INBOX from the shared folder along
    with the Archive's first (already backed up) message.  Each copy logs
    DOUBLEMAILBOX, so alice's and bob's groups span users; they are
    symmetric so whichever group sync_client takes first (hash order,
    which changes from run to run) carries bodies that another user's
    mailbox refers to, new ones and ones only the first-named user holds.
 3. One rolling pass into cairn: the transcript holds an APPLY RESERVE
    whose MBOXNAME list names mailboxes of 2+ users, with no GET MAILBOXES
    for them before it in that batch.
 4. Every user on each of its ring replicas: the bodies in the backup are
    exactly those its records (index and log) refer to, with no foreign
    GUID; the live mailboxes equal the source's snapshot (UIDs, GUIDs,
    flags); bodies equal the source's byte for byte; Cyrus's ctl_backups
    verify and `cairnctl verify` accept everything.
 5. Contrast: the same rolling pass into backupd, and how many bodies it
    stored in a backup whose records do not refer to them.
 6. A cross-user rename: alice gets a folder Projects (3 messages, cached
    by a rolling pass), the admin renames it to user.bob.Projects (and
    gives its ACL to bob), one rolling pass.  The cache holds the old name
    and no message needs reserving, so sync_client sends APPLY RENAME
    user.alice.Projects -> user.bob.Projects; cairn refuses it (NO
    IMAP_PROTOCOL_BAD_PARAMETERS), sync_client promotes both users and
    syncs each alone (GET USER alice: UNMAILBOX of the old name; GET USER
    bob: the folder uploaded whole).  The transcript is printed command by
    command with the router's completions.  Then step 4's checks again
    (Projects' bodies stay in alice's append-only backup as her history),
    alice's replicas hold no live user.bob.* and no live Projects, bob's
    hold Projects with every record; and the same pass into backupd, which
    accepts the RENAME and keeps user.bob.Projects live in alice's backup
    (a file Cyrus's own ctl_backups verify then fails: the rename's chunk
    has no APPLY MAILBOX under the new name, lcb_verify.c).

usage: test_e2e_sync_cache.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import gzip
import hashlib
import os
import re
import smtplib
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["alice", "bob", "carol", "dave"]
FAILURES = []


def expect(condition, what, detail=""):
    """Stop at a failed precondition (the rest would mean nothing)."""
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def check(condition, what, detail=""):
    """An outcome: report it and go on, so one run shows every failure."""
    if condition:
        print("ok - %s" % what)
    else:
        print("not ok - %s\n    %s" % (what, detail.replace("\n", "\n    ")))
        FAILURES.append(what)


def figure(text):
    print("# " + text)


# ------------------------------------------------------------------ relay

class CsyncRelay:
    """A TCP relay on a free port of 127.0.0.1 to the router's csync port;
    records every connection's bytes in each direction."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = self.listener.getsockname()
        self.lock = threading.Lock()
        self.connections = []  # [{"client": bytearray, "server": ...}]
        self.sockets = []
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            record = {"client": bytearray(), "server": bytearray(),
                      "turns": []}
            with self.lock:
                self.connections.append(record)
                self.sockets += [client, server]
            for source, sink, key in ((client, server, "client"),
                                      (server, client, "server")):
                threading.Thread(target=self._pump, daemon=True,
                                 args=(source, sink, record, key)).start()

    def _pump(self, source, sink, record, key):
        # Recorded before it is passed on: a reply is always recorded after
        # the command it answers, so the turns keep the dialogue's order.
        turns = record["turns"]
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            with self.lock:
                record[key] += data
                if turns and turns[-1][0] == key:
                    turns[-1][1].extend(data)
                else:
                    turns.append((key, bytearray(data)))
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

    def take(self):
        """The connections recorded since the last take(): [(client bytes,
        server bytes)]."""
        return [(c, s) for c, s, _ in self.take_dialogues()]

    def take_dialogues(self):
        """As take(), with each connection's turns: [(client bytes, server
        bytes, [("client" or "server", bytes)])], consecutive bytes of one
        side joined into one turn."""
        with self.lock:
            taken = [(bytes(c["client"]), bytes(c["server"]),
                      [(who, bytes(data)) for who, data in c["turns"]])
                     for c in self.connections]
            self.connections = []
        return taken

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.close()
                except OSError:
                    pass


# ------------------------------------------------- reading the transcript

COMMAND_START = re.compile(rb"(?m)^(APPLY RESERVE|GET MAILBOXES|RESTART"
                           rb"|APPLY MESSAGE|APPLY MAILBOX|GET USER"
                           rb"|COMPRESS)\b")
RESERVE = re.compile(rb"APPLY RESERVE %\(PARTITION (\S+) MBOXNAME \(([^)]*)\)"
                     rb" GUID \(([^)]*)\)\)")
LOOKUP_NAMES = re.compile(rb"GET MAILBOXES \(([^)]*)\)")


def split_names(raw):
    return [n.strip('"') for n in raw.decode().split()]


def batches(client_stream):
    """The client's commands cut at each RESTART (sync_client sends one
    after every group of the sync log): [[(verb, offset)]]."""
    result = [[]]
    for m in COMMAND_START.finditer(client_stream):
        verb = m.group(1).decode()
        result[-1].append((verb, m.start()))
        if verb == "RESTART":
            result.append([])
    return [b for b in result if b]


def multi_user_reserves(lab, transcript):
    """[(reserve line, names, users, GUIDs, earlier GET MAILBOXES of the
    batch naming one of them)] of every APPLY RESERVE naming 2+ users."""
    found = []
    for client, _ in transcript:
        for batch in batches(client):
            lookups = []
            for verb, offset in batch:
                if verb == "GET MAILBOXES":
                    m = LOOKUP_NAMES.match(client, offset)
                    lookups += split_names(m.group(1)) if m else ["?"]
                if verb != "APPLY RESERVE":
                    continue
                m = RESERVE.match(client, offset)
                if not m:
                    continue
                names = split_names(m.group(2))
                users = sorted({lab.mailbox_owner(n) for n in names} -
                               {None})
                if len(users) >= 2:
                    found.append((m.group(0).decode(), names, users,
                                  split_names(m.group(3)),
                                  [n for n in lookups if n in names]))
    return found


FILE_HEADER = re.compile(rb"%\{(\S+) ([0-9a-f]{40}) (\d+)\}")


def batch_of(client, offset):
    """The batch ([(verb, offset)]) holding the command at offset."""
    return next(b for b in batches(client) if b[0][1] <= offset <= b[-1][1])


def batch_summary(client, start):
    """One line per command of the batch that holds offset start: the
    RESERVE whole, the bodies of an APPLY MESSAGE (GUID and size), the
    name and record GUIDs of an APPLY MAILBOX."""
    batch = batch_of(client, start)
    lines = []
    for n, (verb, offset) in enumerate(batch):
        end = batch[n + 1][1] if n + 1 < len(batch) else len(client)
        text = client[offset:end]
        if verb == "APPLY MESSAGE":
            lines.append("APPLY MESSAGE (%s)" % " ".join(
                "%%{%s %s %s}" % tuple(x.decode() for x in m)
                for m in FILE_HEADER.findall(text)))
        elif verb == "APPLY MAILBOX":
            name = re.search(rb"MBOXNAME (\S+)", text)
            lines.append("APPLY MAILBOX %%(... MBOXNAME %s ... RECORD (GUIDs"
                         " %s))" % (name.group(1).decode() if name else "?",
                                    " ".join(g.decode() for g in
                                             RECORD_GUID.findall(text))))
        else:
            lines.append(text.split(b"\r\n")[0].decode("utf-8", "replace"))
    return lines


def routing_lines(log):
    """The router's debug lines saying where each command went."""
    return [line.split("] ", 1)[-1] for line in log.splitlines()
            if re.search(r"\] (APPLY|GET|RESTART)\b", line)]


# -------------------------------------------------------- reading backups

LOG_MAILBOX = re.compile(rb"(?m)^\d+ APPLY MAILBOX ")
LOG_LINE = re.compile(rb"(?m)^\d+ APPLY ")
RECORD_GUID = re.compile(rb"\bGUID ([0-9a-f]{40})\b")


def log_record_guids(data_file):
    """GUIDs named by the RECORDs of every APPLY MAILBOX line in a data
    file (the log, not the index: the index leaves out a record whose body
    the backup does not hold, as Cyrus does)."""
    with gzip.open(data_file, "rb") as f:
        data = f.read()
    guids = set()
    for m in LOG_MAILBOX.finditer(data):
        end = LOG_LINE.search(data, m.end())
        guids |= {g.decode() for g in RECORD_GUID.findall(
            data[m.start():end.start() if end else len(data)])}
    return guids


def index_record_guids(state):
    return {r["guid"] for box in state["mailboxes"].values()
            for r in box["records"]}


def source_bodies(lab, source, users):
    """{user: {guid: body}} of every live message on the source (FETCH
    BODY.PEEK[], by proxy login as the user)."""
    result = {}
    snapshot = source.snapshot(users=users)
    for user in users:
        result[user] = {}
        with source.imap(user) as conn:
            for name, box in snapshot.items():
                if lab.mailbox_owner(name) != user or not box["messages"]:
                    continue
                cyruslab.check_ok(*conn.select(
                    '"%s"' % lab.user_view(user, name), readonly=True),
                    "EXAMINE")
                typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
                cyruslab.check_ok(typ, data, "FETCH")
                for item in data:
                    if isinstance(item, tuple):
                        body = item[1]
                        result[user][hashlib.sha1(body).hexdigest()] = body
    return snapshot, result


# ------------------------------------------------------------------ steps

def cache_entries(source, path):
    """The mailbox names in a sync cache db (cyr_dbtool ... show)."""
    r = source.run_tool("cyr_dbtool", path, "twoskip", "show")
    expect(r.ok, "cyr_dbtool reads the sync cache %s" % path, str(r))
    return sorted(line.split("\t", 1)[0] for line in r.stdout.splitlines()
                  if "\t" in line)


def initial_sync(lab, source, relay, cache_paths):
    """Step 1: fill cairn, backupd and both caches; drain the sync log."""
    r = source.sync_client(users=USERS, channel="cairn")
    expect(r.ok, "step 1: sync_client -u %s into cairn (%.2fs)"
           % (" ".join(USERS), r.seconds), r)
    for user in USERS:
        r = source.sync_client(users=[user], channel="backup")
        expect(r.ok, "step 1: sync_client -u %s into backupd" % user, r)
    for channel in ("cairn", "backup"):
        r = source.sync_client(channel=channel, rolling_once=True)
        expect(r.ok, "step 1: a rolling pass (-R -1) drains the %s "
               "channel's sync log (%.2fs)" % (channel, r.seconds), r)
    transcript = relay.take()
    client = b"".join(c for c, _ in transcript)
    expect(transcript and b"COMPRESS" not in client and
           b"APPLY MAILBOX" in client, "step 1: the relay recorded %d "
           "plaintext connections (no COMPRESS: the channel offers none)"
           % len(transcript), client[:2000].decode("utf-8", "replace"))
    wanted = [n for n in source.mailbox_names()
              if lab.mailbox_owner(n) in USERS and "#" not in n]
    for channel, path in cache_paths.items():
        expect(os.path.exists(path), "step 1: %s_sync_cache_db_path made "
               "sync_client write its cache %s" % (channel, path))
        names = cache_entries(source, path)
        expect(set(wanted) <= set(names), "step 1: the %s cache holds all %d"
               " user mailboxes" % (channel, len(wanted)),
               "cache %s\nsource %s" % (names, wanted))


def deliver_to_several(source, users, message):
    """One LMTP transaction to several users: one spool file, one GUID."""
    conn = smtplib.LMTP(source.lmtp_socket)
    try:
        refused = conn.sendmail("sender@cyruslab.example", users, message)
        if refused:
            raise cyruslab.LabError("LMTP refused %r" % refused)
    finally:
        conn.quit()


def uid_of(conn, message_id):
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", message_id)
    cyruslab.check_ok(typ, data, "SEARCH")
    uids = data[0].split()
    if len(uids) != 1:
        raise cyruslab.LabError("SEARCH %s: %r" % (message_id, data))
    return uids[0].decode()


def cross_user_copy(lab, source, owner, index, copiers):
    """A new message for owner, copied to owner's Archive and from there
    (shared with each copier, lrs) into each copier's INBOX, together with
    the Archive's first message (populate's copy of uid 1: a body owner's
    backup already holds and the copier's does not)."""
    archive = "INBOX%sArchive" % lab.separator
    message_id = "%s.%d@cyruslab.example" % (owner, index)
    source.deliver(owner, cyruslab.make_message(owner, index, 3000))
    with source.imap(owner) as conn:
        cyruslab.check_ok(*conn.select("INBOX"), "SELECT")
        cyruslab.check_ok(*conn.uid("COPY", uid_of(conn, message_id),
                                    archive), "COPY to Archive")
        for copier in copiers:
            cyruslab.check_ok(*conn.setacl(archive, copier, "lrs"), "SETACL")
    shared = lab.user_mailbox(owner, "Archive")
    for copier in copiers:
        with source.imap(copier) as conn:
            cyruslab.check_ok(*conn.select('"%s"' % shared, readonly=True),
                              "EXAMINE shared")
            cyruslab.check_ok(*conn.uid(
                "COPY", "1," + uid_of(conn, message_id), "INBOX"),
                "COPY from shared")


def new_mail(lab, source):
    """Step 2's changes on the source."""
    deliver_to_several(source, ["carol", "dave"],
                       cyruslab.make_message("carol+dave", 40, 5000))
    source.deliver("dave", cyruslab.make_message("dave", 41, 250000))
    source.deliver("carol", cyruslab.make_message("carol", 42, 1200))
    cross_user_copy(lab, source, "alice", 43, ["bob", "carol"])
    cross_user_copy(lab, source, "bob", 44, ["alice"])
    with open(os.path.join(source.dir, "conf", "sync", "cairn", "log")) as f:
        log = f.read()
    doubles = re.findall(r"^DOUBLEMAILBOX (\S+) (\S+)$", log, re.M)
    spanning = [d for d in doubles
                if lab.mailbox_owner(d[0]) != lab.mailbox_owner(d[1])]
    expect(len(spanning) >= 3, "step 2: the cairn channel's sync log has %d "
           "DOUBLEMAILBOX lines across users %s" % (len(spanning), spanning),
           log)


def rolling_pass(lab, source, cluster, relay):
    """Step 3."""
    offset = len(cluster.router_log())
    r = source.sync_client(channel="cairn", rolling_once=True)
    expect(r.ok, "step 3: sync_client -R -1 -n cairn exits 0 (%.2fs)"
           % r.seconds, r)
    transcript = relay.take()
    client = b"".join(c for c, _ in transcript)
    counts = {verb: len(re.findall(rb"(?m)^" + verb.encode() + rb"\b",
                                   client))
              for verb in ("GET MAILBOXES", "GET USER", "APPLY RESERVE",
                           "APPLY MESSAGE", "APPLY MAILBOX", "RESTART")}
    figure("step 3: rolling pass: %d connection(s), %d bytes from "
           "sync_client, %s" % (len(transcript), len(client), counts))
    reserves = multi_user_reserves(lab, transcript)
    for line, names, users, guids, lookups in reserves:
        start = client.index(line.encode())
        applied = sum(1 for verb, offset in batch_of(client, start)
                      if verb == "APPLY MAILBOX" and offset > start)
        figure("step 3: multi-user RESERVE for %s: %d mailboxes, %d GUIDs, "
               "GET MAILBOXES before it in its batch: %s; the batch went on "
               "with %d APPLY MAILBOX%s"
               % (users, len(names), len(guids), lookups or "none", applied,
                  "" if applied else " (refused: sync_client promotes the "
                  "group's users to per-user syncs)"))
    for line, *_ in reserves[:1]:
        print("# the first multi-user batch, as sync_client sent it:\n#   "
              + "\n#   ".join(batch_summary(client, client.index(
                  line.encode()))))
    missing = re.findall(rb"^\* MISSING [^\r\n]*", b"".join(
        s for _, s in transcript), re.M)
    print("# the router's MISSING answers:\n#   " + "\n#   ".join(
        m.decode() for m in missing))
    print("# where the router sent each command:\n#   " + "\n#   ".join(
        routing_lines(cluster.router_log()[offset:])))
    expect(reserves, "step 3: sync_client sent an APPLY RESERVE naming "
           "mailboxes of 2+ users (the cache skipped GET MAILBOXES)",
           client[:6000].decode("utf-8", "replace"))
    expect(all(not lookups for *_, lookups in reserves), "step 3: no GET "
           "MAILBOXES named those mailboxes earlier in their batch")
    refused = cluster.router_log()[offset:].count("GET MAILBOXES refused")
    figure("step 3: the router refused %d GET MAILBOXES" % refused)
    return reserves


def check_user_replica(step, user, node, path, want, source_guids, owners,
                       bodies):
    """Step 4 (or 6) for one user on one replica; returns (bodies,
    bytes)."""
    where = "%s: %s on %s" % (step, user, node)
    state = cairncluster.index_state(path)
    stored = cairncluster.message_bodies(path)
    indexed = set(state["messages"])
    referred = index_record_guids(state) | log_record_guids(path)
    check(set(stored) == indexed, "%s: the index lists exactly the %d "
          "bodies of the data file" % (where, len(stored)),
          "bodies only %s\nindex only %s" % (sorted(set(stored) - indexed),
                                             sorted(indexed - set(stored))))
    check(set(stored) == referred, "%s: the bodies are exactly the GUIDs its"
          " records refer to (%d)" % (where, len(referred)),
          "records refer to, no body: %s\nbodies nobody refers to: %s"
          % (sorted(referred - set(stored)), sorted(set(stored) - referred)))
    foreign = {g: sorted(owners[g]) for g in stored
               if g in owners and user not in owners[g]}
    check(not foreign, "%s: no body of another user" % where,
          "foreign: %s" % foreign)
    check(source_guids <= set(stored), "%s: holds all %d GUIDs of the "
          "source's mailboxes" % (where, len(source_guids)),
          "missing %s" % sorted(source_guids - set(stored)))
    got = cairncluster.snapshot_from_index(state)
    differences = cairncluster.index_differences(want, got)
    check(not differences, "%s: the live mailboxes equal the source (%d "
          "mailboxes: UIDs, GUIDs, flags)" % (where, len(want)),
          "\n".join(differences[:30]))
    unequal = [g for g in source_guids
               if g in stored and stored[g] != bodies[user][g]]
    check(not unequal, "%s: bodies equal the source's byte for byte" % where,
          "differ: %s" % unequal)
    return len(stored), sum(len(b) for b in stored.values())


def check_outcome(lab, source, cluster, step="step 4", former_owners=None):
    """Step 4 (and step 6 after the rename).  former_owners: {guid: users
    who held it before}: an append-only backup keeps those bodies, they
    are not another user's."""
    snapshot, bodies = source_bodies(lab, source, USERS)
    owners = {}
    for user, by_guid in bodies.items():
        for guid in by_guid:
            owners.setdefault(guid, set()).add(user)
    for guid, users in (former_owners or {}).items():
        owners.setdefault(guid, set()).update(users)
    shared = sorted(g for g, users in owners.items() if len(users) > 1)
    figure("%s: %d GUIDs on the source, %d held by several users"
           % (step, len(owners), len(shared)))
    placement = cluster.ring_replicas(USERS)
    holders = cluster.holders()
    files = cluster.user_files()
    for user in USERS:
        check(holders.get(user) == sorted(placement[user]), "%s: %s is on"
              " exactly its ring replicas %s" % (step, user, placement[user]),
              "catalogs say %r" % holders.get(user))
        want = cairncluster.comparable_snapshot(
            {n: b for n, b in snapshot.items()
             if lab.mailbox_owner(n) == user})
        for node in placement[user]:
            path = files[node].get(user)
            if path is None:
                check(False, "%s: %s on %s: the node holds the user"
                      % (step, user, node))
                continue
            count, size = check_user_replica(
                step, user, node, path, want, set(bodies[user]), owners,
                bodies)
            figure("%s: %s on %s: %d bodies, %d bytes (data file %d "
                   "bytes)" % (step, user, node, count, size,
                               os.path.getsize(path)))
    r = cluster.cairnctl("verify", "-q", "-r", cluster.ring_file, *USERS)
    check(r.returncode == 0, "%s: cairnctl verify -r ring: all replicas "
          "ok and agree" % step, r.stdout + r.stderr)
    for node in cluster.node_names:
        mapping = {u: p for u, p in files[node].items() if u in USERS}
        if not mapping:
            continue
        report = backupcheck.check_backup_files(mapping)
        check(report.accepted, "%s: Cyrus's ctl_backups verify + "
              "cyr_backup list accept %s's files of %s"
              % (step, node, sorted(mapping)),
              "\n".join("%s: %s" % (u, c.verify_status)
                        for u, c in report.users.items()))


def backupd_contrast(lab, source, backup):
    """Step 5: the same pass into backupd; count the bodies it stored in a
    backup whose records do not refer to them."""
    r = source.sync_client(channel="backup", rolling_once=True)
    expect(r.ok, "step 5: sync_client -R -1 -n backup exits 0 (%.2fs)"
           % r.seconds, r)
    for user, path in sorted(backup.backup_files().items()):
        state = cairncluster.index_state(path)
        stored = cairncluster.message_bodies(path)
        referred = index_record_guids(state) | log_record_guids(path)
        figure("step 5: backupd's %s: %d bodies, %d not referred to by its "
               "records, %d referred to without a body"
               % (user, len(stored), len(set(stored) - referred),
                  len(referred - set(stored))))


# ------------------------------------------- step 6: a cross-user rename

PROJECTS_MESSAGES = (50, 51, 52)
COMMAND_VERB = re.compile(rb"^(?:(APPLY|GET) (\S+)|(RESTART|EXIT|NOOP)\b)")
RENAME_NAMES = re.compile(rb"APPLY RENAME %\(OLDMBOXNAME (\S+) NEWMBOXNAME "
                          rb"(\S+)")
REPLY_MAILBOX = re.compile(rb"(?m)^\* MAILBOX %\(.*?\bMBOXNAME (\S+)")
COMPLETION = re.compile(rb"(?m)^(?:OK|NO|BAD)\b[^\r\n]*")


def projects_names(lab):
    return lab.user_mailbox("alice", "Projects"), \
        lab.user_mailbox("bob", "Projects")


def prepare_projects(lab, source, relay, cache_path):
    """Step 6a: alice's folder Projects with 3 messages (one flagged),
    replicated by a rolling pass into both channels, so that the cairn
    channel's cache names it.  Returns the folder's GUIDs."""
    old, new = projects_names(lab)
    folder = "INBOX%sProjects" % lab.separator
    with source.imap("alice") as conn:
        cyruslab.check_ok(*conn.create(folder), "CREATE")
        for index in PROJECTS_MESSAGES:
            cyruslab.check_ok(*conn.append(
                folder, r"(\Flagged)" if index == 51 else None, None,
                cyruslab.make_message("alice", index, 2000)), "APPEND")
    for channel in ("cairn", "backup"):
        r = source.sync_client(channel=channel, rolling_once=True)
        expect(r.ok, "step 6: a rolling pass replicates %s into the %s "
               "channel" % (old, channel), r)
    relay.take()
    names = cache_entries(source, cache_path)
    expect(old in names and new not in names, "step 6: the cairn cache "
           "names %s, not %s" % (old, new), str(names))
    snapshot = source.snapshot(users=["alice"])
    return {m["guid"] for m in snapshot[old]["messages"]}


def rename_across_users(lab, source):
    """Step 6b: the admin renames alice's Projects into bob's namespace
    (and hands its ACL to bob); Cyrus logs RENAME old new (and MAILBOX old,
    MAILBOX new), which puts both names into both users' groups
    (sync_do_reader)."""
    old, new = projects_names(lab)
    with source.imap() as conn:
        cyruslab.check_ok(*conn.rename(old, new), "admin RENAME")
        # the ACL moves with the folder: give it to its new owner
        cyruslab.check_ok(*conn.setacl(new, "bob", "lrswipkxtecda"),
                          "SETACL")
        cyruslab.check_ok(*conn.deleteacl(new, "alice"), "DELETEACL")
    with open(os.path.join(source.dir, "conf", "sync", "cairn", "log")) as f:
        log = f.read()
    print("# step 6: the cairn channel's sync log after the rename:\n#   "
          + "\n#   ".join(log.splitlines()))
    expect(re.search(r"(?m)^RENAME %s %s$" % (re.escape(old),
                                               re.escape(new)), log),
           "step 6: admin RENAME %s %s, logged as RENAME" % (old, new), log)


def exchanges(turns):
    """[(command, reply)]: each client turn with the server turn after it
    (sync_client waits for every reply, a command is one turn)."""
    result = []
    for n, (who, data) in enumerate(turns):
        if who != "client":
            continue
        follows = n + 1 < len(turns) and turns[n + 1][0] == "server"
        result.append((data, turns[n + 1][1] if follows else b""))
    return result


def command_names(command):
    """The mailbox names a command's first line names."""
    first = command.split(b"\r\n", 1)[0]
    for pattern, group in ((RENAME_NAMES, None), (LOOKUP_NAMES, 1),
                           (RESERVE, 2)):
        m = pattern.match(first)
        if m and group is None:
            return [n.decode().strip('"') for n in m.groups()]
        if m:
            return split_names(m.group(group))
    m = re.search(rb"\bMBOXNAME (\S+)", first)
    return [m.group(1).decode().strip('"')] if m else []


def describe(verb, command):
    """A command in one short line for the printed transcript."""
    first = command.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    if verb == "APPLY MESSAGE":
        return "APPLY MESSAGE (%d bodies)" % len(FILE_HEADER.findall(command))
    if verb == "APPLY MAILBOX":
        return "APPLY MAILBOX %s (%d records)" % (
            " ".join(command_names(command)),
            len(RECORD_GUID.findall(command)))
    return first if len(first) <= 160 else first[:157] + "..."


def read_rename_pass(lab, dialogues):
    """[{"verb", "text", "users", "reply", "reply_mailboxes"}] of every
    csync command of the pass, in order; printed as it goes."""
    commands = []
    print("# step 6: the rolling pass as the relay recorded it (command ->"
          " mailboxes in the reply, completion):")
    for n, (_, _, turns) in enumerate(dialogues):
        for command, reply in exchanges(turns):
            m = COMMAND_VERB.match(command)
            if not m:
                continue  # SASL
            verb = (b" ".join(g for g in m.groups() if g)).decode()
            names = command_names(command)
            done = COMPLETION.findall(reply)
            entry = {"verb": verb, "text": describe(verb, command),
                     "users": sorted({lab.mailbox_owner(x) for x in names}
                                     - {None}),
                     "names": names,
                     "reply": done[-1].decode() if done else "(no reply)",
                     "reply_mailboxes": [x.decode() for x in
                                         REPLY_MAILBOX.findall(reply)]}
            commands.append(entry)
            print("#   [%d] %s -> %s%s" % (
                n, entry["text"], " ".join(entry["reply_mailboxes"]) + " "
                if entry["reply_mailboxes"] else "", entry["reply"]))
    return commands


def rename_pass(lab, source, cluster, relay):
    """Step 6c: one rolling pass; what crossed users and what the router
    said to it, then the per-user syncs."""
    old, new = projects_names(lab)
    offset = len(cluster.router_log())
    r = source.sync_client(channel="cairn", rolling_once=True)
    expect(r.ok, "step 6: sync_client -R -1 -n cairn exits 0 after the "
           "rename (%.2fs)" % r.seconds, r)
    print("# step 6: sync_client -v says:\n#   " + "\n#   ".join(
        line for line in r.stdout.splitlines() if line.strip()))
    commands = read_rename_pass(lab, relay.take_dialogues())
    print("# step 6: where the router sent each command:\n#   " +
          "\n#   ".join(routing_lines(cluster.router_log()[offset:])))
    crossing = [(n, c) for n, c in enumerate(commands)
                if len(c["users"]) >= 2]
    renames = [c for _, c in crossing if c["verb"] == "APPLY RENAME"]
    for _, c in crossing:
        figure("step 6: sync_client sent %s naming %s; the router answered "
               "%s" % (c["verb"], c["users"], c["reply"]))
    if crossing and not renames:
        figure("step 6: sync_client sent no cross-user APPLY RENAME: its "
               "first command naming both users was %s, refused before any "
               "rename" % crossing[0][1]["verb"])
    check(any(c["names"] == [old, new] for c in renames), "step 6: "
          "sync_client sent APPLY RENAME %s -> %s (the cache spared the "
          "lookup of %s, and no RESERVE was needed)" % (old, new, old),
          "\n".join(c["text"] for c in commands))
    refused = [c for _, c in crossing
               if c["reply"].startswith("NO IMAP_PROTOCOL_BAD_PARAMETERS")]
    check(crossing and len(refused) == len(crossing), "step 6: the router "
          "refused every command naming both users with NO "
          "IMAP_PROTOCOL_BAD_PARAMETERS (%d)" % len(crossing),
          "\n".join("%s -> %s" % (c["text"], c["reply"])
                    for _, c in crossing))
    after = commands[crossing[0][0] + 1:] if crossing else []
    user_syncs = [c["text"].split()[-1] for c in after
                  if c["verb"] == "GET USER"]
    check({"alice", "bob"} <= set(user_syncs), "step 6: then sync_client "
          "synced the users alone: GET USER %s" % " ".join(user_syncs),
          "\n".join(c["text"] for c in after))


def check_rename_outcome(lab, cluster, projects_guids):
    """Step 6d, beyond check_outcome: alice's replicas hold no live
    mailbox of bob's and no live Projects; bob's hold Projects whole."""
    old, new = projects_names(lab)
    placement = cluster.ring_replicas(["alice", "bob"])
    files = cluster.user_files()
    for user in ("alice", "bob"):
        for node in placement[user]:
            path = files[node].get(user)
            if path is None:
                continue  # check_outcome says so
            state = cairncluster.index_state(path)
            live = cairncluster.snapshot_from_index(state)
            where = "step 6: %s on %s" % (user, node)
            others = sorted(n for n in live
                            if lab.mailbox_owner(n) != user)
            check(not others, "%s: no live mailbox of another user"
                  % where, "live: %s" % others)
            if user == "alice":
                gone = [b for b in state["mailboxes"].values()
                        if b["mboxname"] == old]
                check(old not in live, "%s: %s is not live (%s)" % (
                    where, old, "deleted in the index" if gone else
                    "absent"), "live: %s" % sorted(live))
                continue
            box = live.get(new, {"messages": []})
            guids = {m["guid"] for m in box["messages"]}
            check(guids == projects_guids, "%s: %s holds all %d records "
                  "(GUIDs) of alice's Projects" % (where, new,
                                                   len(projects_guids)),
                  "holds %s\nwant %s" % (sorted(guids),
                                         sorted(projects_guids)))


def backupd_rename_contrast(lab, source, backup):
    """Step 6e: the same pass into backupd; where the mailbox ends up."""
    old, new = projects_names(lab)
    r = source.sync_client(channel="backup", rolling_once=True)
    figure("step 6: sync_client -R -1 -n backup exits %d; it sent: %s"
           % (r.returncode, "; ".join(
               line.strip() for line in r.stdout.splitlines()
               if re.search(r"RENAME|Promoting|^USER|MAILBOXES", line))))
    files = backup.backup_files()
    for user in ("alice", "bob"):
        live = cairncluster.snapshot_from_index(
            cairncluster.index_state(files[user]))
        figure("step 6: backupd's %s: live mailboxes %s; %s: %s" % (
            user, sorted(live), new, "%d records" % len(
                live[new]["messages"]) if new in live else "none"))
    r = backup.ctl_backups("verify", "alice", "bob")
    figure("step 6: Cyrus's ctl_backups verify of backupd's files: %s"
           % backupcheck.verify_statuses(r.stdout))


def rename_phase(lab, source, cluster, relay, backup, cache_path):
    """Step 6."""
    projects_guids = prepare_projects(lab, source, relay, cache_path)
    rename_across_users(lab, source)
    rename_pass(lab, source, cluster, relay)
    check_outcome(lab, source, cluster, "step 6",
                  {g: {"alice"} for g in projects_guids})
    check_rename_outcome(lab, cluster, projects_guids)
    backupd_rename_contrast(lab, source, backup)


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2,
                              channel_settings={"compress": "no"}) \
            as cluster, cyruslab.Lab() as lab:
        cluster.start()
        relay = CsyncRelay(cluster.csync_address)
        try:
            backup = lab.add_backup()
            # one cache per channel, as imapoptions insists
            cache_paths = {c: os.path.join(lab.dir, "source", "conf",
                                           "sync_cache_%s.db" % c)
                           for c in ("cairn", "backup")}
            source = lab.add_source(
                channels={"cairn": relay.address,
                          "backup": backup.csync_address},
                extra_config={"%s_sync_cache_db_path" % c: p
                              for c, p in cache_paths.items()})
            lab.start()
            cyruslab.populate(source, USERS, messages=5)
            figure("setup: %.1fs" % (time.monotonic() - STARTED))
            initial_sync(lab, source, relay, cache_paths)
            new_mail(lab, source)
            rolling_pass(lab, source, cluster, relay)
            check_outcome(lab, source, cluster)
            backupd_contrast(lab, source, backup)
            rename_phase(lab, source, cluster, relay, backup,
                         cache_paths["cairn"])
        finally:
            relay.close()
        statuses = cluster.stop()
        check(all(s == 0 for s in statuses.values()),
              "router and nodes exit 0 on SIGTERM %s" % statuses)
    if FAILURES:
        print("test_e2e_sync_cache: %d check(s) failed in %.1fs:\n  %s"
              % (len(FAILURES), time.monotonic() - STARTED,
                 "\n  ".join(FAILURES)))
        return 1
    print("test_e2e_sync_cache: passed in %.1fs"
          % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
