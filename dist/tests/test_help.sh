#!/bin/bash
# test_help.sh - every program, every cairnctl subcommand and every verb
# answers -h and --help with its usage on stdout and exit 0, and the
# programs answer --version with the project's version. The subcommands
# and verbs come from cairnctl's own table (`cairnctl help --commands`),
# so a new one is tested without editing this file.
# usage: test_help.sh version cairnctl cairn-router cairn-node
set -u
version=$1 cairnctl=$2 router=$3 node=$4
failures=0 checked=0
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# check_usage LABEL COMMAND...: exit 0, stdout starts with usage.
check_usage() {
    local label=$1 status
    shift
    "$@" >"$out" 2>"$err"
    status=$?
    checked=$((checked + 1))
    if [ "$status" -ne 0 ]; then
        fail "$label: exit $status (stderr: $(head -c 200 "$err"))"
    elif ! head -n 1 "$out" | grep -qE '^[Uu]sage'; then
        fail "$label: stdout does not start with usage: '$(head -n 1 "$out")'"
    fi
}

check_version() {
    local program=$1 output
    shift
    output=$("$@" --version 2>"$err")
    checked=$((checked + 1))
    [ "$?" -eq 0 ] || fail "$program --version: exit status not 0"
    [ "$output" = "$program $version" ] ||
        fail "$program --version: '$output', expected '$program $version'"
}

commands=$("$cairnctl" help --commands) || fail "cairnctl help --commands"
count=$(printf '%s\n' "$commands" | grep -c .)
# the table has more than a handful of entries: a broken listing fails
[ "$count" -ge 10 ] || fail "cairnctl help --commands listed $count entries"

for flag in -h --help; do
    check_usage "cairnctl $flag" "$cairnctl" $flag
    check_usage "cairn-router $flag" "$router" $flag
    check_usage "cairn-node $flag" "$node" $flag
    while read -r words; do
        # shellcheck disable=SC2086 # the words are separate arguments
        check_usage "cairnctl $words $flag" "$cairnctl" $words $flag
    done <<<"$commands"
done
check_usage "cairnctl help" "$cairnctl" help
check_version cairnctl "$cairnctl"
check_version cairn-router "$router"
check_version cairn-node "$node"
# a wrong option is still a usage error on stderr
"$router" --no-such-option >"$out" 2>"$err"
[ "$?" -eq 64 ] || fail "cairn-router --no-such-option: exit not 64"
[ -s "$out" ] && fail "cairn-router --no-such-option wrote to stdout"

echo "test_help: $checked checks, $failures failure(s), $count subcommands and verbs"
[ "$failures" -eq 0 ]
