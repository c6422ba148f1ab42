#!/usr/bin/env python3
"""test_compact_property.py - Cyrus 3.6's own verify judges what cairn's
compaction writes, and cairn's verify must be at least as strict.

1. prop_compact writes N random sync histories through the store and
   compacts each at random moments under random policies (its own checks:
   cairn's verify, live state unchanged, retention honoured); the last
   compacted pair of each history is kept.
2. Cyrus's `ctl_backups verify` (one run for all) must accept every kept
   pair, and cairn's verify (node_tool verify) must too.
3. Damaged copies of a sample (index rows that no longer match the chunk
   they name: a record's MODSEQ, a mailbox's LAST_UID, a message's offset,
   two records given one UID, a record moved to another chunk, a chunk's
   checksum, a row pointing past the last chunk): wherever Cyrus's verify
   fails, cairn's must fail too. The cases where cairn is the stricter are
   counted and printed, not failed.

usage: test_compact_property.py PROP_COMPACT NODE_TOOL HISTORIES [SEED]
Exit 0 pass, 1 fail, 77 skip (not root / no Cyrus tools).
"""
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "lib"))
import backupcheck  # noqa: E402
import cyruslab  # noqa: E402

MUTATION_SAMPLE = 40

# (name, SQL run on a damaged copy's index). Each changes a row so that it
# no longer matches the chunk it names, the way a bad compaction would.
MUTATIONS = [
    ("record modseq", "UPDATE mailbox_message SET modseq = modseq + 1"
     " WHERE id = (SELECT MIN(id) FROM mailbox_message)"),
    ("record uid", "UPDATE mailbox_message SET uid = uid + 100000"
     " WHERE id = (SELECT MAX(id) FROM mailbox_message)"),
    ("two records one uid",
     "UPDATE mailbox_message SET uid = (SELECT b.uid FROM mailbox_message"
     " AS a JOIN mailbox_message AS b ON a.mailbox_id = b.mailbox_id"
     " AND a.last_chunk_id = b.last_chunk_id AND a.id < b.id"
     " ORDER BY a.id LIMIT 1) WHERE id = (SELECT a.id FROM mailbox_message"
     " AS a JOIN mailbox_message AS b ON a.mailbox_id = b.mailbox_id"
     " AND a.last_chunk_id = b.last_chunk_id AND a.id < b.id"
     " ORDER BY a.id LIMIT 1)"),
    ("record in another chunk",
     "UPDATE mailbox_message SET last_chunk_id = (SELECT MIN(id) FROM chunk)"
     " WHERE id = (SELECT MAX(id) FROM mailbox_message)"
     " AND last_chunk_id <> (SELECT MIN(id) FROM chunk)"),
    ("mailbox last_uid", "UPDATE mailbox SET last_uid = last_uid + 7"
     " WHERE id = (SELECT MIN(id) FROM mailbox)"),
    ("mailbox name", "UPDATE mailbox SET mboxname = mboxname || '.x'"
     " WHERE id = (SELECT MAX(id) FROM mailbox)"),
    ("message offset", "UPDATE message SET offset = offset + 1"
     " WHERE id = (SELECT MIN(id) FROM message)"),
    ("message in another chunk",
     "UPDATE message SET chunk_id = (SELECT MAX(id) FROM chunk)"
     " WHERE id = (SELECT MIN(id) FROM message)"
     " AND chunk_id <> (SELECT MAX(id) FROM chunk)"),
    ("chunk data checksum", "UPDATE chunk SET data_sha1 ="
     " 'da39a3ee5e6b4b0d3255bfef95601890afd80709'"
     " WHERE id = (SELECT MAX(id) FROM chunk)"),
    ("chunk length", "UPDATE chunk SET length = length - 1"
     " WHERE id = (SELECT MIN(id) FROM chunk)"),
]


def cairn_verify(node_tool, data_file):
    run = subprocess.run([node_tool, "verify", data_file],
                         capture_output=True, text=True, timeout=120)
    return run.returncode == 0, run.stderr.strip()


def kept_pairs(directory):
    names = sorted(n for n in os.listdir(directory)
                   if not n.endswith(".index"))
    return {n.replace("_", "c"): os.path.join(directory, n) for n in names}


def damaged_copies(pairs, directory, seed):
    """{user: (mutation, path)} for damaged copies of a sample."""
    rng = random.Random(seed)
    sample = rng.sample(sorted(pairs), min(MUTATION_SAMPLE, len(pairs)))
    damaged = {}
    for n, user in enumerate(sample):
        name, sql = MUTATIONS[n % len(MUTATIONS)]
        copy = os.path.join(directory, "d%04d" % n)
        shutil.copyfile(pairs[user], copy)
        shutil.copyfile(pairs[user] + ".index", copy + ".index")
        db = sqlite3.connect(copy + ".index")
        changed = db.execute(sql).rowcount
        db.commit()
        db.close()
        if changed > 0:
            damaged["d%04d" % n] = (name, copy)
    return damaged


def main(argv):
    if len(argv) < 4:
        print(__doc__)
        return 2
    prop, node_tool, histories = argv[1], argv[2], int(argv[3])
    seed = int(argv[4]) if len(argv) > 4 else int(time.time())
    cyruslab.skip_unless_runnable()
    work = tempfile.mkdtemp(prefix="cairn-prop-")
    failed = False
    try:
        kept = os.path.join(work, "kept")
        os.makedirs(kept)
        started = time.monotonic()
        run = subprocess.run([prop, "-n", str(histories), "-s", str(seed),
                              "-k", kept, "-l"], capture_output=True,
                             text=True)
        print(run.stdout, end="")
        if run.returncode != 0:
            print(run.stderr[-20000:], file=sys.stderr)
            print("not ok - prop_compact failed (seed %d)" % seed)
            return 1
        pairs = kept_pairs(kept)
        print("ok - %d histories written and compacted, %d compacted pairs"
              " kept (%.1fs)" % (histories, len(pairs),
                                 time.monotonic() - started))

        started = time.monotonic()
        report = backupcheck.check_backup_files(pairs, list_all=False,
                                                tool_timeout=600)
        rejected = {u: c.verify_status for u, c in report.users.items()
                    if not c.accepted}
        for user, status in sorted(rejected.items())[:20]:
            print("# Cyrus rejects %s (%s): %s" % (user, pairs[user], status))
        if rejected:
            failed = True
            print("not ok - Cyrus's verify rejects %d of %d compacted pairs"
                  " (seed %d)" % (len(rejected), len(pairs), seed))
        else:
            print("ok - Cyrus's ctl_backups verify accepts all %d compacted"
                  " pairs (%.1fs)" % (len(pairs), time.monotonic() - started))
        cairn_rejected = [u for u in pairs
                          if not cairn_verify(node_tool, pairs[u])[0]]
        if cairn_rejected:
            failed = True
            print("not ok - cairn's verify rejects %r" % cairn_rejected[:20])
        else:
            print("ok - cairn's verify accepts all %d" % len(pairs))

        damaged_dir = os.path.join(work, "damaged")
        os.makedirs(damaged_dir)
        damaged = damaged_copies(pairs, damaged_dir, seed)
        verdict = backupcheck.check_backup_files(
            {u: path for u, (_, path) in damaged.items()})
        lenient, stricter = [], []
        for user, (mutation, path) in sorted(damaged.items()):
            cyrus_ok = verdict.users[user].verify_status == "ok"
            ours_ok, ours_text = cairn_verify(node_tool, path)
            if cyrus_ok and not ours_ok:
                stricter.append("%s (%s)" % (mutation, ours_text))
            if ours_ok and not cyrus_ok:
                lenient.append("%s: Cyrus says %s" %
                               (mutation, verdict.users[user].verify_status))
        for line in stricter:
            print("# cairn stricter than Cyrus: %s" % line)
        if lenient:
            failed = True
            for line in lenient:
                print("not ok - cairn's verify accepts what Cyrus's rejects:"
                      " %s" % line)
        else:
            print("ok - on %d damaged copies cairn's verify fails wherever"
                  " Cyrus's does (%d where only cairn's does)"
                  % (len(damaged), len(stricter)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("test_compact_property: %s (seed %d)"
          % ("FAILED" if failed else "passed", seed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
