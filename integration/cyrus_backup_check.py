#!/usr/bin/env python3
"""cyrus_backup_check.py -- does real Cyrus accept these backup files?

Runs Cyrus 3.6's own `ctl_backups verify` and `cyr_backup -u USER list all`
on per-user backup files that backupd did not write (cairn's), on copies in
a temp dir, and says per user whether Cyrus accepts them.

usage: cyrus_backup_check.py [-v] [--keep] [--timeout S] DIR USER...
       cyrus_backup_check.py [-v] --file USER=DATAFILE [--file ...]

DIR is searched (recursively) for each USER's data file, named USER or
USER_<suffix> as backupd names them, with DATAFILE.index beside it.

Exit status: 0 every user accepted; 1 some user rejected; 2 bad usage or
files not found; 77 cannot run here (not root / no Cyrus tools).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import backupcheck  # noqa: E402
import cyruslab  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Check backup files with Cyrus's ctl_backups/cyr_backup.")
    parser.add_argument("dir", nargs="?", help="directory with the files")
    parser.add_argument("users", nargs="*", help="users to check")
    parser.add_argument("--file", action="append", default=[],
                        metavar="USER=DATAFILE", help="explicit data file")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the tools' full output")
    parser.add_argument("--timeout", type=int, default=20, metavar="SECONDS",
                        help="kill each Cyrus tool run after this long "
                        "(3.6.1 can spin forever on a corrupt chunk)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (its path is printed)")
    args = parser.parse_args(argv)
    if not args.file and not (args.dir and args.users):
        parser.error("give DIR USER... or --file USER=DATAFILE")
    return args


def mapping_from(args):
    mapping = {}
    if args.dir and args.users:
        mapping.update(backupcheck.find_backup_files(args.dir, args.users))
    for item in args.file:
        user, sep, path = item.partition("=")
        if not sep or not user or not path:
            raise cyruslab.LabError("--file wants USER=DATAFILE, not %r"
                                    % item)
        if not os.path.isfile(path) or not os.path.isfile(path + ".index"):
            raise cyruslab.LabError("%s or %s.index is missing" % (path, path))
        mapping[user] = os.path.abspath(path)
    return mapping


def main(argv):
    args = parse_args(argv)
    reason = cyruslab.missing_prerequisites()
    if reason:
        print("SKIP: %s" % reason)
        return cyruslab.SKIP_EXIT_CODE
    try:
        mapping = mapping_from(args)
    except cyruslab.LabError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    report = backupcheck.check_backup_files(
        mapping, keep=args.keep, tool_timeout=args.timeout)
    rejected = 0
    for user in mapping:
        check = report.users[user]
        listing = check.list_result
        print("%s: %s (verify: %s; cyr_backup list all: exit %d) %s"
              % (user, "accepted" if check.accepted else "REJECTED",
                 check.verify_status, listing.returncode, check.data_file))
        if args.verbose or not check.accepted:
            print(listing.stdout + listing.stderr)
        rejected += not check.accepted
    if args.verbose or rejected:
        for verify in report.verify:
            print(str(verify))
        print("Cyrus syslog:\n%s" % report.log)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
