"""backupcheck -- Cyrus's own backup tools run on files backupd did not
write (cairn's): does real Cyrus 3.6 accept them?

`ctl_backups` and `cyr_backup` find a user's files through backups.db
(backup_get_paths() in Cyrus's backup/lcb.c: key = userid, value = the
data file's path; the index is that path + ".index"; the db's format is
the `backup_db` setting, twoskip here, written with `cyr_dbtool -n`).
Python 3 standard library only; needs root and Debian's cyrus-imapd.
"""
import dataclasses
import json
import os
import re
import shutil

import cyruslab


@dataclasses.dataclass
class UserCheck:
    """What Cyrus's tools said about one user's backup files."""
    user: str
    data_file: str
    verify_status: str      # "ok", "failed (...)", "not found", ...
    list_result: cyruslab.ToolResult
    accepted: bool


def find_backup_files(directory, users):
    """{user: data file} for each user: a file named USER or USER_<suffix>
    (the way backupd names them) anywhere under directory, with USER's
    file + ".index" beside it.  Raises LabError for a missing or an
    ambiguous user."""
    found = {u: [] for u in users}
    for root, _, files in os.walk(directory):
        names = set(files)
        for name in files:
            if name.endswith(".index") or name + ".index" not in names:
                continue
            for user in users:
                if name == user or re.fullmatch(re.escape(user) + r"_[^_]+",
                                                name):
                    found[user].append(os.path.join(root, name))
    mapping = {}
    for user, paths in found.items():
        if len(paths) != 1:
            raise cyruslab.LabError(
                "user %s: %d data+index pairs under %s: %r"
                % (user, len(paths), directory, paths))
        mapping[user] = paths[0]
    return mapping


@dataclasses.dataclass
class CheckReport:
    """Cyrus's verdict on a set of users' backup files."""
    users: dict             # user -> UserCheck
    verify: list            # ToolResult of each `ctl_backups verify` run
    log: str                # Cyrus's syslog during the check

    @property
    def accepted(self):
        return bool(self.users) and all(c.accepted
                                        for c in self.users.values())


def check_backup_files(mapping, keep=False, tool_timeout=20, list_all=True):
    """Run Cyrus's `ctl_backups verify USER` and `cyr_backup -u USER list
    all` on backup files not written by backupd (cairn's).  mapping: {user:
    data file path}; each data file needs its .index beside it.  The files
    are copied into a temp dir owned by cyrus (the tools open them
    read-write and lock them) with a backups.db mapping each user to its
    copy.  A user is accepted only if verify prints "verify USER: ok"
    (its exit status is not enough: `ctl_backups verify nosuchuser alice`
    exits 0) and cyr_backup exits 0.  Each tool run is killed after
    tool_timeout seconds, which rejects the user: Cyrus 3.6.1's tools can
    spin forever on a corrupt chunk.  list_all=False skips cyr_backup (one
    process per user) for large batches.  Returns a CheckReport."""
    lab = cyruslab.Lab(keep=keep, prefix="cyrus-backup-check-")
    try:
        tool = lab.add_tools_only("check")
        _install_copies(tool, mapping)
        verify_runs, statuses = _verify(tool, list(mapping), tool_timeout)
        users = {}
        for user in mapping:
            listing = None
            if list_all:
                listing = tool.cyr_backup(user, "list", "all",
                                          timeout=tool_timeout)
            status = statuses.get(user, "not found")
            users[user] = UserCheck(user, mapping[user], status, listing,
                                    status == "ok" and
                                    (listing is None or listing.ok))
        return CheckReport(users, verify_runs, tool.log())
    finally:
        lab.close()


def backup_mailboxes(mapping, keep=False, tool_timeout=20):
    """What Cyrus reads in each user's backup files: {user: `cyr_backup
    json mailboxes` parsed ([{"mboxname", "uniqueid", "last_appenddate",
    "messages": [{"uid", "guid"}...]}...])}, for comparing cairn's files
    with a real backupd's (Backup.mailboxes()).  mapping as for
    check_backup_files(); raises LabError if cyr_backup fails."""
    lab = cyruslab.Lab(keep=keep, prefix="cyrus-backup-read-")
    try:
        tool = lab.add_tools_only("read")
        _install_copies(tool, mapping)
        contents = {}
        for user in mapping:
            r = tool.cyr_backup(user, "json", "mailboxes",
                                timeout=tool_timeout)
            if not r.ok:
                raise cyruslab.LabError(str(r))
            contents[user] = json.loads(r.stdout)
        return contents
    finally:
        lab.close()


def _install_copies(tool, mapping):
    """Copy each user's data file (+ .index) under the tool instance's
    backup partition and register the copy in its backups.db."""
    copies = {}
    for user, data_file in mapping.items():
        target_dir = os.path.join(tool.data_dir, user)
        os.makedirs(target_dir, exist_ok=True)
        copy = os.path.join(target_dir, os.path.basename(data_file))
        shutil.copyfile(data_file, copy)
        if os.path.exists(data_file + ".index"):
            shutil.copyfile(data_file + ".index", copy + ".index")
        copies[user] = copy
    cyruslab.chown_cyrus(tool.dir)
    # one cyr_dbtool run for all users: SET with quoted strings on stdin
    batch = "".join("SET %s %s\n" % (_quoted(user), _quoted(copy))
                    for user, copy in copies.items())
    r = tool.run_tool("cyr_dbtool", "-n", tool.backups_db, "twoskip",
                      "batch", stdin_data=batch.encode())
    if not r.ok:
        raise cyruslab.LabError("cyr_dbtool batch failed:\n%s" % r)
    cyruslab.chown_cyrus(tool.dir)


def _quoted(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def _verify(tool, users, timeout):
    """One `ctl_backups verify USER...` for all users; if it times out,
    each user it had not reported yet gets a run of its own (a user whose
    own run times out is reported as such).  Returns (runs, statuses)."""
    run = tool.ctl_backups("verify", *users, timeout=timeout)
    runs, statuses = [run], verify_statuses(run.stdout)
    if run.returncode != cyruslab.TIMED_OUT:
        return runs, statuses
    for user in users:
        if user in statuses:
            continue
        run = tool.ctl_backups("verify", user, timeout=timeout)
        runs.append(run)
        statuses.update(verify_statuses(run.stdout))
        if run.returncode == cyruslab.TIMED_OUT:
            statuses[user] = "timed out after %ds (killed)" % timeout
    return runs, statuses


def verify_statuses(text):
    """{user: status} from `ctl_backups verify` output lines
    "verify USER: ok" / "verify USER: failed (...)"."""
    statuses = {}
    for line in text.splitlines():
        m = re.match(r"^verify (\S+): (.*)$", line)
        if m:
            statuses[m.group(1)] = m.group(2)
    return statuses
