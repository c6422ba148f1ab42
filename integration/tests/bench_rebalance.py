#!/usr/bin/env python3
"""Rebalance throughput (issue 15): how fast `cairnctl rebalance` moves
users node to node.  Prints figures, asserts only that every user moved
and verifies (never a time).

Two runs, each on a fresh 2-node cluster whose ring holds node1 alone
(1 replica) and whose new ring holds node2 alone, so that every user
moves node1 -> node2:

  big    users of BIG_USER_MB each, BIG_TOTAL_MB in all (CI: 256 MB in
         8 users; the issue's size: CAIRN_BENCH_REBALANCE_MB=1024);
         prints MB/s (the bytes of the data files moved, per second of
         the whole run: pulls, rebuilt indexes, full verifies, switches);
  small  SMALL_USERS users of one small message each (CI: 500; the
         issue's count: CAIRN_BENCH_REBALANCE_USERS=1000); prints users/s.

The users' backup files are written straight into node1's data dir before
it starts, in Cyrus's format (gzip chunks of "APPLY MESSAGE" lines with
the bodies, then one "APPLY MAILBOX" chunk naming them), rather than
through sync_client, which would take minutes for a gigabyte. The message
chunks are made once and written into every big user's file (the bodies
are the same; each user's MAILBOX chunk is its own). node_tool (built
beside cairn-node) builds each index, and `cairnctl verify` checks
node1's users before the timed run.

usage: bench_rebalance.py [--router P] [--node P] [--cairnctl P]
Environment: CAIRN_BENCH_REBALANCE_MB (total of the big users, default
256), CAIRN_BENCH_REBALANCE_USERS (small users, default 500).
"""
import base64
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402

BIG_TOTAL_MB = int(os.environ.get("CAIRN_BENCH_REBALANCE_MB", "256"))
BIG_USER_MB = 32 if BIG_TOTAL_MB <= 256 else 128
SMALL_USERS = int(os.environ.get("CAIRN_BENCH_REBALANCE_USERS", "500"))
MESSAGE_BYTES = 1024 * 1024
CHUNK_MESSAGES = 32  # messages per gzip member (32 MiB chunks)
T0 = 1700000000


def gzip_member(lines):
    """One chunk: the header line and lines, as one gzip member."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return (compressor.compress(b"# cyrus backup: chunk start\r\n" + lines)
            + compressor.flush())


def message_line(ts, body):
    guid = hashlib.sha1(body).hexdigest()
    return guid, (b"%d APPLY MESSAGE (%%{default %s %d}\r\n" % (
        ts, guid.encode(), len(body)) + body + b")\r\n")


def mailbox_line(ts, user, records):
    """APPLY MAILBOX of user's INBOX holding records [(guid, size)]."""
    parts = []
    for uid, (guid, size) in enumerate(records, 1):
        parts.append("%%(UID %d MODSEQ %d LAST_UPDATED %d FLAGS () "
                     "INTERNALDATE %d SIZE %d GUID %s)"
                     % (uid, uid + 1, ts, ts, size, guid))
    text = ("%d APPLY MAILBOX %%(UNIQUEID bench%s MBOXNAME user.%s "
            "SYNC_CRC 0 SYNC_CRC_ANNOT 0 LAST_UID %d HIGHESTMODSEQ %d "
            "RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE %d POP3_LAST_LOGIN 0 "
            "POP3_SHOW_AFTER 0 UIDVALIDITY %d PARTITION default ACL "
            "\"%s\tlrswipkxtecdan\t\" OPTIONS P QUOTAROOT user.%s "
            "CREATEDMODSEQ 1 FOLDERMODSEQ %d RECORD (%s))\r\n"
            % (ts, user, user, len(records), len(records) + 1, ts, ts, user,
               user, len(records) + 1, " ".join(parts)))
    return text.encode()


def body(index, size):
    head = ("From: bench@example.org\r\nTo: someone@example.org\r\n"
            "Subject: bench message %d\r\nMessage-ID: <bench-%d@example>"
            "\r\n\r\n" % (index, index)).encode()
    text = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n",
                                                                 b"\r\n")
    return head + text[:max(0, size - len(head))]


def message_chunks(messages, size):
    """The gzip members holding messages bodies, and [(guid, size)]."""
    members, records = [], []
    for first in range(0, messages, CHUNK_MESSAGES):
        lines = []
        for i in range(first, min(messages, first + CHUNK_MESSAGES)):
            data = body(i, size)
            guid, line = message_line(T0 + i, data)
            lines.append(line)
            records.append((guid, len(data)))
        members.append(gzip_member(b"".join(lines)))
    return members, records


def write_users(data_dir, users, members, records, ts, node_tool):
    """Each user's data file (members + its MAILBOX chunk) in data_dir,
    named as Cyrus does, its index (node_tool reindex) and the catalog
    rows. Returns bytes written."""
    os.makedirs(data_dir, exist_ok=True)
    db = sqlite3.connect(os.path.join(data_dir, "catalog.db"))
    db.execute("CREATE TABLE IF NOT EXISTS users(userid TEXT PRIMARY KEY"
               " NOT NULL, data_path TEXT NOT NULL)")
    total = 0
    for user in users:
        directory = os.path.join(data_dir, user[0])
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, user + "_bench0")
        with open(path, "wb") as f:
            for member in members:
                f.write(member)
            f.write(gzip_member(mailbox_line(ts, user, records)))
            total += f.tell()
        subprocess.run([node_tool, "reindex", path], check=True)
        db.execute("INSERT INTO users VALUES (?, ?)", (user, path))
    db.commit()
    db.close()
    return total


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s" % what)


def move_all(binaries, users, members, records, label):
    """A 2-node cluster, users on node1, rebalanced onto node2."""
    with cairncluster.Cluster(binaries, nodes=2, replicas=1,
                              prefix="cairn-bench-rebalance-") as cluster:
        node_tool = os.path.join(os.path.dirname(binaries.node), "node_tool")
        written = write_users(cluster.data_dir("node1"), users, members,
                              records, T0 + 100000, node_tool)
        r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                             "main", "-r", "1", "-n", "node1:100")
        expect(r.returncode == 0, "%s: ring of node1" % label, r.stderr)
        cluster.start()
        t0 = time.monotonic()
        r = cluster.cairnctl("verify", timeout=1800)
        expect(r.returncode == 0, "%s: node1 indexed and verified %d users "
               "(%.1f MB, %.1fs, not timed below)"
               % (label, len(users), written / 1e6, time.monotonic() - t0),
               r.stdout[-2000:] + r.stderr)
        mid = os.path.join(cluster.dir, "mid.ring")
        new = os.path.join(cluster.dir, "new.ring")
        r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                             "node2:100", "-o", mid)
        expect(r.returncode == 0, "%s: add node2" % label, r.stderr)
        r = cluster.cairnctl("ring", "remove-node", mid, "node1", "-o", new)
        expect(r.returncode == 0, "%s: remove node1" % label, r.stderr)
        t0 = time.monotonic()
        r = cluster.cairnctl("rebalance", "-q", "-d", "main", "-g", "0", new,
                             timeout=1800)
        seconds = time.monotonic() - t0
        expect(r.returncode == 0, "%s: rebalance: %s" % (label,
                                                          r.stdout.strip()),
               r.stdout + r.stderr)
        holders = cluster.holders()
        expect(all(holders.get(u) == ["node2"] for u in users),
               "%s: every user is on node2 alone" % label,
               repr({u: holders.get(u) for u in users[:5]}))
        hold = re.search(r"longest hold (\d+) ms", r.stdout)
        return written, seconds, int(hold.group(1)) if hold else -1


def main():
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    per_user = BIG_USER_MB * MESSAGE_BYTES // MESSAGE_BYTES
    members, records = message_chunks(per_user, MESSAGE_BYTES)
    big_users = ["big%03d" % i
                 for i in range(max(1, BIG_TOTAL_MB // BIG_USER_MB))]
    written, seconds, hold = move_all(binaries, big_users, members, records,
                                      "big")
    big = ("big users: %d x %d MB = %.0f MB moved node to node in %.2f s: "
           "%.1f MB/s; longest hold %d ms"
           % (len(big_users), BIG_USER_MB, written / 1e6, seconds,
              written / 1e6 / seconds, hold))
    print(big)

    members, records = message_chunks(1, 2000)
    small_users = ["small%05d" % i for i in range(SMALL_USERS)]
    written, seconds, hold = move_all(binaries, small_users, members,
                                      records, "small")
    small = ("small users: %d (%.1f MB) moved in %.2f s: %.0f users/s; "
             "longest hold %d ms"
             % (len(small_users), written / 1e6, seconds,
                len(small_users) / seconds, hold))
    print(small)
    print("figures: %s; %s" % (big, small))
    return 0


if __name__ == "__main__":
    sys.exit(main())
