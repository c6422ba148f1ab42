#!/usr/bin/env python3
"""bench_loadgen.py - cairn-loadgen against a local cairn cluster: ingest
MB/s, unchanged users/s, command latencies, the slowest and fastest
connection, router and node CPU per raw MB and the router's peak RSS, at
each connection count.

Starts a cairncluster (NODES nodes, REPLICAS replicas; the router's
[limits] as the defaults) and runs `cairn-loadgen -c COUNTS` at it with
--watch on the router and every node. cairn-loadgen exits non-zero when
any command fails (a NO, a lost connection, or an unchanged GET USER that
does not report every message sent): that is the assertion; the figures
are printed, never judged. No Cyrus needed.

usage: bench_loadgen.py [--router P --node P --cairnctl P] --loadgen P
         [--counts 1,4,16,64] [--messages N] [--nodes N] [--replicas N]
         [--max-size SIZE]
CAIRN_LOADGEN_COUNTS, CAIRN_LOADGEN_MESSAGES override --counts and
--messages when set (full size: 1,4,16,64,200 x 200 messages).
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402


def main():
    binaries, rest = cairncluster.binaries_from_argv()
    parser = argparse.ArgumentParser()
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--counts", default="1,4,16,64,200")
    parser.add_argument("--messages", default="200")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-size", default="1M")
    args = parser.parse_args(rest)
    counts = os.environ.get("CAIRN_LOADGEN_COUNTS") or args.counts
    messages = os.environ.get("CAIRN_LOADGEN_MESSAGES") or args.messages
    quiet = {"log_level": "info"}
    # the shipped node_timeout (the test clusters' 5s marks a node down
    # when 200 users commit at once on a busy 2-core machine)
    router = dict(quiet, node_timeout="30s")
    with cairncluster.Cluster(binaries, nodes=args.nodes,
                              replicas=args.replicas, router_settings=router,
                              node_settings=quiet,
                              mechanisms="PLAIN") as cluster:
        cluster.start()
        argv = [args.loadgen, "-p", str(cluster.csync_port), "-u",
                cluster.sasl_user, "-w", cluster.sasl_password, "-c", counts,
                "-m", messages, "-M", args.max_size]
        for name, daemon in cluster.daemons.items():
            argv += ["-W", "%s=%d" % (name, daemon.pid)]
        print("# %d nodes, replicas %d: %s" % (args.nodes, args.replicas,
                                               " ".join(argv)), flush=True)
        r = subprocess.run(argv, timeout=3000)
        if r.returncode != 0:
            print("not ok - cairn-loadgen exited %d" % r.returncode)
            print(cluster.logs(40))
            return 1
        print("ok - every command of every connection succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
