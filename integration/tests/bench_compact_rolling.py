#!/usr/bin/env python3
"""bench_compact_rolling.py - what a user replicated in rolling mode costs
in chunks, and what a compaction with cluster.conf's default [compaction]
(retention 7d, min_chunk 1M, max_chunk 64M, work_threshold 10) makes of it.

A real Cyrus source replicates one user into a one-node cairn cluster: a
first `sync_client -u`, then PASSES times one new message delivered and
one rolling pass (`sync_client -R -1`), each pass a chunk. Then `cairnctl
compact` asks the node to compact with its configured (default) policy,
the one its schedule uses. Prints chunk count and file size before and
after; asserts only outcomes: the compacted file passes Cyrus's
`ctl_backups verify`, holds every message (GUIDs equal the source's), and
has fewer chunks. Label bench: figures, no timed assertion.

usage: bench_compact_rolling.py [--router P] [--node P] [--cairnctl P]
                                [--passes N]
"""
import argparse
import os
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

USER = "roll"


def figures(path):
    db = sqlite3.connect("file:%s.index?mode=ro" % path, uri=True)
    try:
        chunks = db.execute("SELECT COUNT(*) FROM chunk").fetchone()[0]
        guids = {r[0] for r in db.execute("SELECT guid FROM message")}
    finally:
        db.close()
    return chunks, os.path.getsize(path), guids


def main():
    cyruslab.skip_unless_runnable()
    binaries, rest = cairncluster.binaries_from_argv()
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=1000)
    args = parser.parse_args(rest)
    with cairncluster.Cluster(binaries, nodes=1, replicas=1) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        source.create_user(USER)
        source.deliver(USER, labmail.make_message(USER, 0))
        r = source.sync_client(users=[USER], channel="cairn", verbose=False)
        if not r.ok:
            raise AssertionError(str(r))
        started = time.monotonic()
        for n in range(1, args.passes + 1):
            source.deliver(USER, labmail.make_message(USER, n))
            r = source.sync_client(channel="cairn", rolling_once=True,
                                   verbose=False)
            if not r.ok:
                raise AssertionError("pass %d: %s" % (n, r))
        elapsed = time.monotonic() - started
        path = cluster.user_files()["node1"][USER]
        chunks_before, size_before, guids_before = figures(path)
        print("# %d rolling passes in %.1fs: %d chunks, %d bytes"
              % (args.passes, elapsed, chunks_before, size_before))

        started = time.monotonic()
        r = cluster.cairnctl("compact", USER, timeout=600)
        if r.returncode != 0:
            raise AssertionError("cairnctl compact: %s %s" % (r.stdout,
                                                            r.stderr))
        chunks_after, size_after, guids_after = figures(path)
        print("# cairnctl compact (default policy) in %.2fs: %d -> %d chunks,"
              " %d -> %d bytes" % (time.monotonic() - started, chunks_before,
                                   chunks_after, size_before, size_after))
        print(r.stdout.strip())
        source_guids = set()
        for mailbox in source.snapshot([USER]).values():
            source_guids |= {m["guid"] for m in mailbox.get("messages", [])
                             if isinstance(m, dict) and "guid" in m}
        check = backupcheck.check_backup_files({USER: path}, tool_timeout=600)
        failures = []
        if not check.accepted:
            failures.append("Cyrus rejects the compacted file: %s"
                            % check.users[USER].verify_status)
        if guids_after != guids_before:
            failures.append("bodies changed: %d -> %d"
                            % (len(guids_before), len(guids_after)))
        if len(source_guids) != args.passes + 1:
            failures.append("source snapshot: %d GUIDs, %d delivered"
                            % (len(source_guids), args.passes + 1))
        elif not source_guids <= guids_after:
            failures.append("%d source messages missing"
                            % len(source_guids - guids_after))
        if chunks_after >= chunks_before:
            failures.append("compaction did not merge chunks")
        if failures:
            print("\n".join("not ok - " + f for f in failures))
            return 1
        print("ok - Cyrus's verify accepts the compacted file; %d bodies,"
              " all the source's" % len(guids_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
