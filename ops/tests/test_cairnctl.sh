#!/bin/bash
# test_cairnctl.sh - runs the built cairnctl as an administrator would:
# `config check` accepts the example and rejects broken copies of it with
# file:line and the reason, usage errors exit 64, a missing file 66.
# Usage: test_cairnctl.sh PATH/TO/cairnctl PATH/TO/cluster.example.conf
set -u

cairnctl=$1
example=$2
# shellcheck source=ops/tests/cli_test_lib.sh
source "$(dirname "$0")/cli_test_lib.sh"

# The line number of the first line of file matching pattern.
line_of() {
    grep -n -m1 -- "$2" "$1" | cut -d: -f1
}

# --- the example and the built-in default are valid ---
run 0 config check "$example"
expect_in out "$example: OK (1 router, 1 channel, 1 destination, 3 nodes)"
run 0 -c "$example" config check
expect_in out "$example: OK ("
run 0 config check
expect_in out "(built-in cluster.example.conf): OK (1 router"
run 0 --json config check "$example"
expect_in out '"ok":true'
expect_in out '"nodes":3'
run 0 config check --json "$example"
expect_in out '"channels":1'

# --- broken copies: exit 1, file:line: reason on stderr ---
broken=$tmp/unknown-key.conf
sed 's/^replicas = 2$/replicas = 2\nbogus = 1/' "$example" >"$broken"
run 1 config check "$broken"
expect_in err "$broken:$(line_of "$broken" '^bogus'): unknown key 'bogus' in [destination main]"

broken=$tmp/bad-value.conf
sed 's/^replicas = 2$/replicas = two/' "$example" >"$broken"
run 1 -c "$broken" config check
expect_in err "$broken:$(line_of "$broken" '^replicas'): bad value for 'replicas': 'two' is not a number"

broken=$tmp/out-of-range.conf
sed 's/^node_window = 16$/node_window = 5000/' "$example" >"$broken"
run 1 config check "$broken"
expect_in err "$broken:$(line_of "$broken" '^node_window'): bad value for 'node_window': '5000' is out of range 1..1024"

broken=$tmp/missing-section.conf
sed '/^\[channel backup\]$/,/^idle_timeout/d' "$example" >"$broken"
run 1 config check "$broken"
expect_in err "$broken:$(wc -l <"$broken"): missing section [channel NAME]"

broken=$tmp/dangling.conf
sed 's/^nodes = node1, node2, node3$/nodes = node1, node2, node4/' \
    "$example" >"$broken"
run 1 config check "$broken"
expect_in err "$broken:$(line_of "$broken" '^nodes'): [destination main] names unknown node 'node4'"
run 1 --json config check "$broken"
expect_in out '"ok":false'
expect_in out "\"line\":$(line_of "$broken" '^nodes')"

# --- missing input: 66 ---
run 66 config check "$tmp/no-such.conf"
expect_in err "$tmp/no-such.conf: No such file or directory"

# --- usage errors: 64 ---
run 64
expect_in err "usage: cairnctl"
run 64 frobnicate
expect_in err "unknown command 'frobnicate'"
run 64 --bogus config check
run 64 config
run 64 config frobnicate
run 64 config check "$example" extra
run 64 config check --bogus "$example"
run 64 -c

# --- help, version ---
run 0 help
expect_in out "config"
expect_in out "64 usage error"
run 0 --help
expect_in out "commands:"
run 0 help config
expect_in out "usage: cairnctl config check"
run 0 --version
expect_in out "cairnctl "

# --- config show prints a file that checks the same ---
run 0 config show "$example"
expect_in out "[node node3]"
expect_in out "zone = node3"
cp "$tmp/out" "$tmp/shown.conf"
run 0 config check "$tmp/shown.conf"
expect_in out "OK (1 router, 1 channel, 1 destination, 3 nodes)"

run 0 --json config show "$example"
expect_in out '"replicas":2'
if command -v python3 >/dev/null; then
    checks=$((checks + 1))
    python3 -c 'import json, sys; json.load(sys.stdin)' <"$tmp/out" ||
        fail "config show --json is not JSON"
fi

finish test_cairnctl
