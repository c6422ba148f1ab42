#!/bin/bash
# cli_test_lib.sh - what the cairnctl shell tests share: a temp dir removed
# on exit, running cairnctl with its exit status checked, asserting on its
# output, and the closing count. Source it after setting `cairnctl`.
# Each run leaves stdout in $tmp/out and stderr in $tmp/err.

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
checks=0

fail() {
    echo "FAIL: $*" >&2
    echo "  stdout: $(head -c 2000 "$tmp/out")" >&2
    echo "  stderr: $(head -c 2000 "$tmp/err")" >&2
    failures=$((failures + 1))
}

# run STATUS ARGS...: runs cairnctl, expects exit STATUS.
run() {
    local want=$1 got
    shift
    checks=$((checks + 1))
    "$cairnctl" "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "cairnctl $* exited $got, expected $want"
}

# expect_in FILE TEXT: the last run's out or err contains TEXT.
expect_in() {
    checks=$((checks + 1))
    grep -qF -- "$2" "$tmp/$1" || fail "$1 lacks: $2"
}

# same_file A B: the two files are byte for byte the same.
same_file() {
    checks=$((checks + 1))
    cmp -s "$1" "$2" || fail "$1 and $2 differ"
}

# finish NAME: prints the count; the script's status is whether all passed.
finish() {
    echo "$1: $checks checks, $failures failed"
    [ "$failures" -eq 0 ]
}
