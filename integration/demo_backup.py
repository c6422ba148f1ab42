#!/usr/bin/env python3
"""demo_backup.py -- back up real mail into a running cairn cluster.

Used by scripts/run-local.sh (cairn's main job): stands up a throwaway real
Cyrus 3.6 source server (integration/lib/cyruslab.py) on free 127.0.0.1
ports, delivers deterministic mail to a few users over LMTP, and replicates
them into cairn's router with Cyrus's own unmodified sync_client, first all
users (-A), then, after new mail, one user at a time (-u). The source is
torn down afterwards; what it sent stays in the cluster.

    demo_backup.py --router 127.0.0.1:2005 --authname cairn \
                   --password-file FILE [--users 3] [--messages 5]

Exit 0 when every sync_client run succeeded, 1 otherwise, 77 when this
machine cannot run Cyrus (not root, or Cyrus's packages missing).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import cyruslab  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--router", required=True, help="HOST:PORT")
    parser.add_argument("--authname", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5)
    return parser.parse_args()


def main():
    args = parse_args()
    host, _, port = args.router.rpartition(":")
    with open(args.password_file) as f:
        password = f.read().strip()
    problem = cyruslab.missing_prerequisites()
    if problem:
        print("demo: cannot stand up a Cyrus source here: %s" % problem)
        return 77
    users = ["user%03d" % i for i in range(1, args.users + 1)]
    ok = True
    with cyruslab.Lab(prefix="cairn-demo-") as lab:
        source = lab.add_source(
            channels={"cairn": (host, int(port))},
            extra_config={"cairn_sync_authname": args.authname,
                          "cairn_sync_password": password})
        lab.start()
        cyruslab.populate(source, users, messages=args.messages)
        print("demo: Cyrus source up; delivered %d messages to each of %s"
              % (args.messages, ", ".join(users)))
        runs = [("all users (-A)", dict(all_users=True))]
        for label, kwargs in runs:
            result = source.sync_client(channel="cairn", **kwargs)
            print("demo: sync_client %s -> exit %s" % (label,
                                                        result.returncode))
            ok = ok and result.ok
            if not result.ok:
                print(result)
        source.deliver(users[0], cyruslab.make_message(users[0], 100))
        result = source.sync_client(channel="cairn", users=[users[0]])
        print("demo: one new message for %s, sync_client -u -> exit %s"
              % (users[0], result.returncode))
        ok = ok and result.ok
        if not result.ok:
            print(result)
        total = sum(len(m["messages"])
                    for m in source.snapshot(users=users).values())
        print("demo: the source holds %d messages in %d users' mailboxes"
              % (total, len(users)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
