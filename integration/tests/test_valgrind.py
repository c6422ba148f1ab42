#!/usr/bin/env python3
"""cairn-router and cairn-node under valgrind memcheck (issue 11, item 7;
label valgrind, not run by .ci/run: valgrind makes them ~20x slower).

A cyruslab SOURCE replicates 3 users (sync_client -u, new mail, a second
pass) into a cairncluster of 2 nodes, 2 replicas, every daemon under
`valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
--errors-for-leak-kinds=definite` with integration/valgrind.supp (library
suppressions only, each explained there); `cairnctl status` and `cairnctl
verify` run against them, then SIGTERM.  Asserted: every daemon exits 0
(valgrind's exit code 1 means it found an error), each log says "ERROR
SUMMARY: 0 errors", and the replicas agree.

usage: test_valgrind.py [--router P] [--node P] [--cairnctl P]
Exit 77 when valgrind, root or Cyrus is missing.
"""
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
USERS = ["val1", "val2", "val3"]
SUPPRESSIONS = os.path.join(HERE, "..", "valgrind.supp")


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def memcheck(log_dir, name):
    return ["valgrind", "--tool=memcheck", "--error-exitcode=1",
            "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--track-fds=no",
            "--suppressions=%s" % os.path.abspath(SUPPRESSIONS),
            "--log-file=%s" % os.path.join(log_dir, name + ".valgrind")]


def main():
    if shutil.which("valgrind") is None:
        print("SKIP: valgrind is not installed")
        return 77
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    log_dir = cairncluster.tempfile.mkdtemp(prefix="cairn-valgrind-")
    nodes = ["node1", "node2"]
    with cairncluster.Cluster(
            binaries, nodes=2, replicas=2,
            router_settings={"node_timeout": "60s",
                             "node_answer_timeout": "30s"},
            node_wrappers={n: memcheck(log_dir, n) for n in nodes},
            router_wrapper=memcheck(log_dir, "router")) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=4, sieve=True)
        r = source.sync_client(USERS, channel="cairn", timeout=300)
        expect(r.ok, "sync_client -u of %d users under valgrind"
               % len(USERS), r)
        for user in USERS:
            source.deliver(user, labmail.make_message(user, 30, 20000))
        r = source.sync_client(USERS, channel="cairn", timeout=300)
        expect(r.ok, "a second pass with new mail", r)
        r = cluster.cairnctl("status", timeout=120)
        expect(r.returncode == 0, "cairnctl status", r.stdout + r.stderr)
        r = cluster.cairnctl("verify", timeout=120)
        expect(r.returncode == 0, "cairnctl verify agrees",
               r.stdout + r.stderr)
        statuses = cluster.stop()
    failed = []
    for name in ["router"] + nodes:
        with open(os.path.join(log_dir, name + ".valgrind")) as f:
            text = f.read()
        summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
        clean = statuses.get(name) == 0 and summary and summary[-1] == "0"
        print("# %s: exit %s, %s" % (name, statuses.get(name),
                                      summary and "ERROR SUMMARY: %s errors"
                                      % summary[-1]))
        if not clean:
            failed.append("%s:\n%s" % (name, text[-6000:]))
    expect(not failed, "router and nodes memcheck clean (exit 0, 0 errors; "
           "logs in %s)" % log_dir, "\n".join(failed))
    shutil.rmtree(log_dir)
    print("test_valgrind: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
