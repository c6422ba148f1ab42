#!/bin/bash
# run-local.sh - cairn's main job on a fresh Debian 12 machine (as root):
# installs what is missing, builds, starts a local cluster on the built-in
# default configuration (cluster.example.conf: three storage nodes and a
# router on 127.0.0.1, data under ./cairn-data), and backs up real mail
# into it: a throwaway Cyrus 3.6 source server replicates to the router
# with its own unmodified sync_client. The cluster keeps running.
#
#   bash scripts/run-local.sh          start (if not running) + back up mail
#   bash scripts/run-local.sh start    start only
#   bash scripts/run-local.sh status   cairnctl status of the running cluster
#   bash scripts/run-local.sh stop     stop what start started (by pid)
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
action=${1:-run}
build=$top/build-release
data=$top/cairn-data # the default config's paths are relative to here
run=$data/run
nodes=(node1 node2 node3)
router_address=127.0.0.1:2005

die() {
    echo "run-local: $*" >&2
    exit 1
}

alive() { # alive NAME: its pid file names a live process
    local pid
    [ -f "$run/$1.pid" ] || return 1
    pid=$(cat "$run/$1.pid")
    kill -0 "$pid" 2>/dev/null
}

stop_all() {
    local name pid
    for name in router "${nodes[@]}"; do
        if alive "$name"; then
            pid=$(cat "$run/$name.pid")
            kill -TERM "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "run-local: stopped $name (pid $pid)"
        fi
        rm -f "$run/$name.pid"
    done
}

build_all() {
    bash scripts/install-deps.sh
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j"$(nproc)" >/dev/null
}

wait_for() { # wait_for WHAT COMMAND...: probe until it succeeds (20 s)
    local what=$1
    shift
    for _ in $(seq 200); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what did not come up; see $data/log/"
}

router_banner() { # the router's csync banner ends with "* OK ..."
    python3 - "$router_address" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=2) as s:
    data = b""
    while b"\n* OK" not in data and not data.startswith(b"* OK"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(1)
        data += chunk
PY
}

start_all() {
    local name
    mkdir -p "$run" "$data/log"
    chmod 700 "$data"
    "$build/ops/cairnctl" config check >/dev/null ||
        die "the built-in configuration does not check"
    # CURVE is on by default: every ZeroMQ link is encrypted and only the
    # keys named in the configuration are admitted. Made once, kept.
    for name in router admin "${nodes[@]}"; do
        [ -f "$data/keys/$name.secret" ] && continue
        "$build/ops/cairnctl" keys create "$name" >/dev/null ||
            die "cannot make the CURVE key $name"
        echo "run-local: made the CURVE key $data/keys/$name (cairnctl keys create)"
    done
    for name in "${nodes[@]}"; do
        if alive "$name"; then
            echo "run-local: $name already running (pid $(cat "$run/$name.pid"))"
            continue
        fi
        rm -f "$run/$name.ready"
        # A local try-out as root: --allow-root (a production cluster sets
        # [security] user instead, README "Least privilege").
        "$build/node/cairn-node" -f -n "$name" -w "$run/$name.ready" \
            --allow-root >>"$data/log/$name.log" 2>&1 &
        echo $! >"$run/$name.pid"
        wait_for "$name" test -s "$run/$name.ready"
        echo "run-local: started $name (pid $(cat "$run/$name.pid")), log $data/log/$name.log"
    done
    # The destination's ring: made once by the administrator's tool, as
    # in production; the router refuses to guess placement without it.
    mkdir -p "$data/rings"
    if [ ! -f "$data/rings/main.ring" ]; then
        "$build/ops/cairnctl" ring create "$data/rings/main.ring" \
            --from-config main >/dev/null
        echo "run-local: made the ring $data/rings/main.ring (cairnctl ring create)"
    fi
    if alive router; then
        echo "run-local: router already running (pid $(cat "$run/router.pid"))"
    else
        "$build/router/cairn-router" --allow-root \
            >>"$data/log/router.log" 2>&1 &
        echo $! >"$run/router.pid"
        wait_for router router_banner
        echo "run-local: started router (pid $(cat "$run/router.pid")) on $router_address, log $data/log/router.log"
    fi
}

show_status() {
    "$build/ops/cairnctl" status --users || true
}

backup_real_mail() {
    local password_file
    password_file=$(mktemp)
    trap 'rm -f "$password_file"' RETURN
    # The built-in channel's credentials (cluster.example.conf).
    sed -n 's/^sasl_password *= *//p' cluster.example.conf | head -1 >"$password_file"
    echo "run-local: backing up real mail with Cyrus's sync_client"
    local rc=0
    python3 integration/demo_backup.py --router "$router_address" \
        --authname "$(sed -n 's/^sasl_user *= *//p' cluster.example.conf | head -1)" \
        --password-file "$password_file" || rc=$?
    if [ "$rc" -eq 77 ]; then
        echo "run-local: skipped the mail backup (needs root and Cyrus's packages)"
        return 0
    fi
    [ "$rc" -eq 0 ] || die "sync_client into cairn failed (exit $rc); see $data/log/router.log"
    echo "run-local: what the cluster holds now:"
    show_status
    "$build/ops/cairnctl" verify -q || die "cairnctl verify found a problem"
}

case "$action" in
run)
    build_all
    start_all
    backup_real_mail
    ;;
start)
    build_all
    start_all
    ;;
status) show_status ;;
stop) stop_all; exit 0 ;;
*) die "usage: run-local.sh [run|start|status|stop]" ;;
esac

cat <<EOT

cairn is running: router on $router_address (channel "backup"), nodes
node1..node3 on 127.0.0.1:5701-5703, data in $data.
Point a Cyrus server at it with, in its imapd.conf:
    sync_log_channels: backup
    backup_sync_host: 127.0.0.1
    backup_sync_port: 2005
    backup_sync_authname: cairn
    backup_sync_password: change-me-local-only
    backup_sync_try_imap: 0
and run: /usr/lib/cyrus/bin/sync_client -n backup -A
Status:  bash scripts/run-local.sh status
Stop:    bash scripts/run-local.sh stop
EOT
