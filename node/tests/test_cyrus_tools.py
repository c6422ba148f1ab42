#!/usr/bin/env python3
"""test_cyrus_tools.py - Cyrus 3.6's own tools against cairn's store, both
ways:

1. cairn writes user001's backup from recorded sync_client traffic
   (data/*.apply), then data/resend.apply (held bodies resent, and a new
   one twice in one record), which must add that new body once and no
   other; Debian's `ctl_backups verify` and `cyr_backup list all` must
   accept it, and the same backup after cairn compacted it.
2. Files written by a real backupd (data/backupd/, see its manifest.json):
   cairn verifies them at every level, and cairn's reindex of each data
   file gives exactly the index backupd itself wrote. Cyrus's own
   `ctl_backups reindex` is run too and its differences are reported, not
   asserted: 3.6.1's reindex drops SIEVE lines whose CONTENT is a literal
   and then records wrong chunk lengths and checksums.

usage: test_cyrus_tools.py NODE_TOOL
Exit 0 pass, 1 fail, 77 skip (not root / no Cyrus tools).
"""
import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "lib"))
import backupcheck  # noqa: E402
import cyruslab  # noqa: E402

TABLES = ("chunk", "message", "mailbox", "mailbox_message", "subscription",
          "seen", "sieve")
SESSIONS = ("01", "02", "03", "04", "05", "06", "07", "09")
# data/resend.apply is made by hand (not by extract_apply.py): bodies of
# 01.apply and 02.apply resent, and this one, new, twice in one record
RESENT_NEW = b"b4cebfdd4675d10a2b9dc0f0c93c0a7767cdd897"
CHUNK_HEADER_LENGTH = 29  # "# cyrus backup: chunk start\r\n"


def dump_index(path):
    """Every row of Cyrus's seven tables, with SQLite storage classes."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        out = {}
        for table in TABLES:
            cols = [r[1] for r in db.execute("PRAGMA table_info(%s)" % table)]
            sel = ", ".join("%s, typeof(%s)" % (c, c) for c in cols)
            out[table] = db.execute(
                "SELECT %s FROM %s ORDER BY id" % (sel, table)).fetchall()
        return out
    finally:
        db.close()


def diff_dumps(ours, theirs):
    lines = []
    for table in TABLES:
        a, b = ours[table], theirs[table]
        if a != b:
            lines.append("table %s: cairn %d rows, Cyrus %d rows"
                         % (table, len(a), len(b)))
            for x, y in zip(a, b):
                if x != y:
                    lines.append("  cairn: %r\n  Cyrus: %r" % (x, y))
                    break
    return lines


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("%s failed: %s%s"
                             % (" ".join(argv), r.stdout, r.stderr))
    return r


def body_literals(data):
    """The GUIDs of the FILE literals in the data file, in order."""
    with open(data, "rb") as f:
        log = gzip.decompress(f.read())
    return re.findall(rb"%\{default ([0-9a-f]{40}) [0-9]+\}\r\n", log)


def cairn_writes_cyrus_reads(tool, tmp):
    data = os.path.join(tmp, "cairn", "user001")
    os.makedirs(os.path.dirname(data))
    run([tool, "apply", data, "1795668600"]
        + [os.path.join(HERE, "data", "%s.apply" % s) for s in SESSIONS]
        + [os.path.join(HERE, "data", "resend.apply")])
    guids = body_literals(data)
    print("cairn-written user001: %d body literals, %d distinct GUIDs"
          % (len(guids), len(set(guids))))
    if len(guids) != 5 or len(set(guids)) != 5 or RESENT_NEW not in guids:
        print("a resent body was stored twice or the new one not at all")
        return False
    # cairn-node's private tables hold rows too (the last committed
    # sequence): Cyrus's tools must not mind them.
    db = sqlite3.connect(data + ".index")
    db.execute("INSERT OR REPLACE INTO cairn_sequence (id, last_sequence)"
               " VALUES (1, 42)")
    db.commit()
    db.close()
    if not cyrus_accepts(data, "written", (RESENT_NEW.decode(),)):
        return False
    # compaction drops the new body: no mailbox record refers to it
    print(run([tool, "compact", data]).stdout.strip())
    return cyrus_accepts(data, "compacted", ())


def cyrus_accepts(data, how, more_guids):
    report = backupcheck.check_backup_files({"user001": data})
    check = report.users["user001"]
    print("cairn-%s user001: verify %s; cyr_backup list all: exit %d"
          % (how, check.verify_status, check.list_result.returncode))
    if not check.accepted:
        print(check.list_result)
        print(report.tool_log if hasattr(report, "tool_log") else "")
        return False
    listing = check.list_result.stdout
    for guid in ("e9a6894fc65be05aed31b2daa065cd996b9126a6",
                 "3f92d71a8e4af087089400708ba686ad609f6b88") + more_guids:
        if guid not in listing:
            print("cyr_backup list all lacks message %s" % guid)
            return False
    return True


def cyrus_reindex(copies):
    """Runs Cyrus's `ctl_backups reindex` on copies {user: data path};
    returns {user: dump of the index Cyrus built}."""
    lab = cyruslab.Lab(prefix="cairn-node-reindex-")
    try:
        tool = lab._add(cyruslab.Backup(lab, "reindex"))
        tool.write_configs()
        installed = {}
        for user, path in copies.items():
            target = os.path.join(tool.data_dir, user)
            os.makedirs(target, exist_ok=True)
            installed[user] = os.path.join(target, user)
            shutil.copyfile(path, installed[user])
        cyruslab.chown_cyrus(tool.dir)
        for user, path in installed.items():
            r = tool.run_tool("cyr_dbtool", "-n", tool.backups_db, "twoskip",
                              "set", user, path)
            if not r.ok:
                raise AssertionError(str(r))
        cyruslab.chown_cyrus(tool.dir)
        dumps = {}
        for user, path in installed.items():
            r = tool.ctl_backups("reindex", user, timeout=30)
            if "reindex %s: ok" % user not in r.stdout:
                raise AssertionError("Cyrus reindex %s: %s" % (user, r))
            dumps[user] = dump_index(path + ".index")
        return dumps
    finally:
        lab.close()


def without_empty_chunk_times(dump):
    """The dump with ts_start/ts_end of header-only chunks blanked.

    backupd stamps the empty chunk of an unchanged sync pass with the
    session's open and close times, which are in no line of the file; a
    reindex (cairn's) gives it the last line time before it instead."""
    out = dict(dump)
    out["chunk"] = [row[:2] + (None, row[3], None) + row[5:]
                    if row[8] == CHUNK_HEADER_LENGTH else row
                    for row in dump["chunk"]]
    return out


def cyrus_writes_cairn_reads(tool, tmp):
    source = os.path.join(HERE, "data", "backupd")
    users = sorted(f for f in os.listdir(source)
                   if os.path.isfile(os.path.join(source, f + ".index")))
    if not users:
        print("no backupd-made files in %s" % source)
        return False
    ok = True
    copies = {}
    for user in users:
        theirs = os.path.join(tmp, "theirs", user)
        ours = os.path.join(tmp, "ours", user)
        for path in (theirs, ours):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(os.path.join(source, user), path)
        shutil.copyfile(os.path.join(source, user + ".index"),
                        theirs + ".index")
        copies[user] = theirs
        # cairn verifies backupd's own pair at every level
        run([tool, "verify", theirs])
        # cairn rebuilds the index from the data file alone
        run([tool, "reindex", ours])
        run([tool, "verify", ours])
    cyrus = cyrus_reindex(copies)
    for user in users:
        ours = dump_index(os.path.join(tmp, "ours", user) + ".index")
        problems = diff_dumps(
            without_empty_chunk_times(ours),
            without_empty_chunk_times(dump_index(copies[user] + ".index")))
        print("%s: cairn reindex %s the index backupd wrote"
              % (user, "==" if not problems else "!="))
        for line in problems:
            print(line)
        ok = ok and not problems
        differences = diff_dumps(ours, cyrus[user])
        print("%s: cairn reindex %s Cyrus's reindex (information only)"
              % (user, "==" if not differences else "!="))
        for line in differences:
            print(line)
    return ok


def main():
    cyruslab.skip_unless_runnable()
    tool = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="cairn-node-cyrus-")
    try:
        ok = cairn_writes_cyrus_reads(tool, tmp)
        ok = cyrus_writes_cairn_reads(tool, tmp) and ok
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
