#!/usr/bin/env python3
"""A real Prometheus scrapes a local cairn cluster (issue 12 part 2).

A router and 3 nodes (replicas 2), each with its own metrics_listen; a
Prometheus from Debian's package on a free port, with its own config and
data dir in a temp dir, scraping all four every second.  N users are
backed up with Cyrus's own sync_client; then Prometheus's HTTP API
(/api/v1/query) is polled until it has scraped the nodes after the
backup (the value of sum(cairn_node_users) is the event waited for; the
deadline is only a hang guard), and the test asserts that every target
is up == 1, that sum(cairn_node_users) == N x replicas, and that the
router counted the sync's commands answered OK.  The exposition of one
node is also checked as text (HELP/TYPE lines, histogram buckets).

Without a prometheus binary the test FAILS, saying so (install-deps.sh
installs Debian's prometheus package); it never passes silently.

usage: test_metrics_prometheus.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
from labproc import free_port  # noqa: E402

STARTED = time.monotonic()
USERS = ["promuser%02d" % i for i in range(1, 7)]
REPLICAS = 2
DEADLINE = 90.0  # hang guard only


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


class Prometheus:
    """Debian's prometheus on 127.0.0.1:PORT scraping targets every 1 s."""

    def __init__(self, binary, targets):
        self.dir = tempfile.mkdtemp(prefix="cairn-prometheus-")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n")
            for job, address in targets.items():
                f.write("  - job_name: %s\n    static_configs:\n"
                        "      - targets: ['%s']\n" % (job, address))
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.process = subprocess.Popen(
            [binary, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True)

    def wait_ready(self):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError("prometheus exited: %s" % self.tail())
            try:
                if "Ready" in http_get(self.url + "/-/ready", 1.0):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready: %s" % self.tail())

    def query(self, expression):
        """The API's answer to an instant query (decoded JSON)."""
        return json.loads(http_get(self.url + "/api/v1/query?" +
                                   urllib.parse.urlencode(
                                       {"query": expression})))

    def wait_value(self, expression, want):
        """Polls until the query's single value equals want; returns the
        last answer (raw JSON text) for the record."""
        end = time.monotonic() + DEADLINE
        last = None
        while time.monotonic() < end:
            last = self.query(expression)
            result = last.get("data", {}).get("result", [])
            if len(result) == 1 and float(result[0]["value"][1]) == want:
                return last
            time.sleep(0.5)
        raise AssertionError("%s never became %s; last answer %s\n%s"
                             % (expression, want, last, self.tail()))

    def tail(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-3000:]

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    cyruslab.skip_unless_runnable()
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK)
        else None)
    if binary is None:
        print("FAIL: no prometheus binary: install Debian's prometheus "
              "package (scripts/install-deps.sh does)")
        return 1
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    router_metrics = "127.0.0.1:%d" % free_port()
    prometheus = None
    with cairncluster.Cluster(binaries, nodes=3, replicas=REPLICAS,
                              router_settings={
                                  "metrics_listen": router_metrics}
                              ) as cluster, cyruslab.Lab() as lab:
        targets = {"router": router_metrics}
        for name in cluster.node_names:
            targets[name] = "127.0.0.1:%d" % free_port()
            cluster.set_node_settings(name, {"metrics_listen": targets[name]})
        cluster.start()
        try:
            prometheus = Prometheus(binary, targets)
            prometheus.wait_ready()
            expect(True, "prometheus %s ready on %s" % (binary,
                                                        prometheus.url))
            source = lab.add_source(channels={
                "cairn": cluster.csync_address})
            lab.start()
            cyruslab.populate(source, USERS, messages=3, size=1500,
                              extras=False, sieve=False)
            r = source.sync_client(channel="cairn", users=USERS)
            expect(r.ok, "sync_client -u of %d users (%.2fs)"
                   % (len(USERS), r.seconds), r)
            want = len(USERS) * REPLICAS
            answer = prometheus.wait_value("sum(cairn_node_users)", want)
            print("# curl '%s/api/v1/query?query=sum(cairn_node_users)'"
                  % prometheus.url)
            print("# " + json.dumps(answer))
            expect(True, "sum(cairn_node_users) == %d users x %d replicas"
                   % (len(USERS), REPLICAS))
            prometheus.wait_value(
                'sum(cairn_node_backup_age_users{destination="main",'
                'age="lt_1h"})', want)
            expect(True, "users per backup age bucket: all %d user "
                   "replicas < 1 h old" % want)
            size = prometheus.query("sum(cairn_node_bytes)")["data"]["result"]
            expect(size and float(size[0]["value"][1]) > 0,
                   "cairn_node_bytes counts the backups' bytes", size)
            # every target scraped up since the backup (a one-shot query
            # missed the router's first scrape under ASan on a loaded
            # machine; the wait is the event, DEADLINE the hang guard)
            prometheus.wait_value("count(up == 1)", len(targets))
            up = prometheus.query("up")["data"]["result"]
            print("# up: " + json.dumps(
                {s["metric"]["job"]: s["value"][1] for s in up}))
            expect(len(up) == len(targets) and
                   all(s["value"][1] == "1" for s in up),
                   "every target (router, node1-3) is up == 1", up)
            ok = prometheus.wait_value(
                'count(cairn_router_commands_total{channel="cairn",'
                'verb="APPLY MESSAGE",result="ok"} > 0)', 1)
            expect(ok, "the router counted APPLY MESSAGE answered OK")
            acks = prometheus.query(
                'sum(cairn_router_node_answers_total{kind="apply",'
                'result="ack"})')["data"]["result"]
            expect(acks and float(acks[0]["value"][1]) > 0,
                   "nodes' acks counted per destination and node", acks)
            text = http_get("http://%s/metrics" % targets["node1"])
            for line in ("# TYPE cairn_node_users gauge",
                         "# TYPE cairn_node_group_commit_seconds histogram",
                         'cairn_node_group_commit_seconds_bucket{le="+Inf"}',
                         "# TYPE process_resident_memory_bytes gauge",
                         "# TYPE process_open_fds gauge"):
                expect(line in text, "node1 /metrics has %r" % line, text)
        finally:
            if prometheus is not None:
                prometheus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
