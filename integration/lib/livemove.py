"""livemove -- what the tests of moving users while Cyrus keeps
replicating share (integration_rebalance_sync, integration_rebalance_pull):
new mail delivered round-robin while the move runs, and the check that
every message the source holds reached every new replica, by GUID, once
rolling replication has caught up.  Python 3 standard library only.
"""
import threading
import time

import cairncluster
import cyruslab


class Deliverer:
    """New mail round-robin over users until stop is set (thread)."""

    def __init__(self, source, users):
        self.source = source
        self.users = list(users)
        self.count = 0
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        index = 100
        while not self.stop.is_set():
            user = self.users[self.count % len(self.users)]
            try:
                self.source.deliver(user,
                                    cyruslab.make_message(user, index))
                self.count += 1
                index += 1
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
                return
            time.sleep(0.03)

    def finish(self):
        """Stops delivering; the errors met (empty when all went)."""
        self.stop.set()
        self.thread.join(30)
        return self.errors


def source_guids(source, users):
    """{user: {guid}} of every live message the source holds."""
    result = {}
    for name, box in source.snapshot(users=users).items():
        user = source.lab.mailbox_owner(name)
        result.setdefault(user, set()).update(m["guid"]
                                              for m in box["messages"])
    return result


def missing_in_cluster(cluster, placement, want):
    """Messages of want not in every new replica's index (count, sample)."""
    files = cluster.user_files()
    missing, sample = 0, []
    for user, guids in want.items():
        for node in placement[user]:
            path = files.get(node, {}).get(user)
            stored = set()
            if path is not None:
                state = cairncluster.index_state(path)
                stored = {rec["guid"] for box in state["mailboxes"].values()
                          for rec in box["records"] if not rec["expunged"]}
            lost = guids - stored
            missing += len(lost)
            if lost and len(sample) < 5:
                sample.append((user, node, sorted(lost)[:3]))
    return missing, sample


def wait_all_replicated(cluster, source, users, timeout=60.0):
    """Waits until every message the source holds is on every replica the
    ring gives its user: (missing, sample, messages wanted, placement)."""
    placement = cluster.ring_replicas(users)
    want = source_guids(source, users)
    deadline = time.monotonic() + timeout
    missing, sample = missing_in_cluster(cluster, placement, want)
    while missing and time.monotonic() < deadline:
        time.sleep(1.0)
        missing, sample = missing_in_cluster(cluster, placement, want)
    return missing, sample, sum(len(g) for g in want.values()), placement
