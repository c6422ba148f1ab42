#!/bin/bash
# test_cairnctl_ring.sh - runs `cairnctl ring` as an administrator would:
# create (from arguments and from the config), every change as a dry run,
# with --commit and with -o, show, diff with a user list, the planner, and
# the errors (corrupt, truncated and missing files, bad arguments).
# Usage: test_cairnctl_ring.sh PATH/TO/cairnctl PATH/TO/cluster.example.conf
set -u

cairnctl=$1
example=$2
# shellcheck source=ops/tests/cli_test_lib.sh
source "$(dirname "$0")/../../ops/tests/cli_test_lib.sh"

ring=$tmp/backup.ring
for i in $(seq 1 3000); do echo "user$i@example.com $((i % 97 + 1))"; done \
    >"$tmp/users"
echo "giant@example.com 200000" >>"$tmp/users"

# --- create ---
run 0 ring create "$ring" -d backup -r 2 -n a:100:z1 -n b:100:z2 \
    -n c:200:z3 -n d:100:z1
expect_in out "ring backup: epoch 1, 4 nodes, 2 replicas"
expect_in out "wrote $ring (epoch 1)"
run 1 ring create "$ring" -d backup -r 2 -n a:100
expect_in err "exists"
run 0 ring create "$ring" -f -d backup -r 2 -n a:100:z1 -n b:100:z2 \
    -n c:200:z3 -n d:100:z1
run 64 ring create "$tmp/x.ring" -d backup -n a:100
run 64 ring create "$tmp/x.ring" -d backup -r 2 -n a
run 1 ring create "$tmp/x.ring" -d backup -r 3 -n a:1 -n b:1
run 0 -c "$example" ring create "$tmp/main.ring" --from-config main
expect_in out "ring main: epoch 1, 3 nodes, 2 replicas"
expect_in out "node1"
run 1 -c "$example" ring create "$tmp/none.ring" --from-config nosuch
run 0 ring show "$ring"
expect_in out "epoch 1, 4 nodes"
run 0 --json ring show "$ring"
expect_in out '"destination":"backup","epoch":1'

# --- a change is a dry run unless --commit or -o ---
cp "$ring" "$tmp/before.ring"
run 0 ring add-node "$ring" e:100:z2 -u "$tmp/users"
expect_in out "ring backup: epoch 2, 5 nodes"
expect_in out "partitions changed"
expect_in out "users moving"
expect_in out "dry run: nothing written"
same_file "$ring" "$tmp/before.ring"
run 0 ring add-node "$ring" e:100:z2 --commit
expect_in out "wrote $ring (epoch 2)"
run 0 ring show "$ring"
expect_in out "epoch 2, 5 nodes"
run 0 ring remove-node "$ring" a -o "$tmp/removed.ring"
expect_in out "wrote $tmp/removed.ring (epoch 3)"
run 0 ring show "$ring"
expect_in out "epoch 2, 5 nodes"
run 0 ring set-weight "$ring" b 300 --commit
expect_in out "epoch 3"
run 0 ring set-zone "$ring" b z9 --commit
expect_in out "epoch 4"
run 0 ring show "$ring"
expect_in out "z9"

# --- diff, with and without users ---
run 0 ring diff "$tmp/before.ring" "$tmp/removed.ring"
expect_in out "partitions changed"
expect_in out "about"
run 0 ring diff "$tmp/before.ring" "$tmp/removed.ring" -u "$tmp/users" -l
expect_in out "users moving"
expect_in out " -> "
run 0 ring diff "$ring" "$ring"
expect_in out "partitions changed 0 of 65536"

# --- the planner pins users so that bytes balance ---
run 0 ring plan "$ring" -u "$tmp/users" -t 0.02 --commit
expect_in out "plan: load max/mean per weight"
expect_in out "wrote $ring (epoch 5)"
run 0 --json ring show "$ring"
checks=$((checks + 1))
grep -q '"overrides":[1-9]' "$tmp/out" || fail "no overrides after plan"
run 64 ring plan "$ring"

# --- errors ---
run 66 ring show "$tmp/missing.ring"
head -c 500 "$ring" >"$tmp/truncated.ring"
run 1 ring show "$tmp/truncated.ring"
expect_in err "truncated.ring"
sed 's/^epoch 5$/epoch 6/' "$ring" >"$tmp/edited.ring"
run 1 ring show "$tmp/edited.ring"
run 1 ring remove-node "$ring" nosuch
run 64 ring add-node "$ring" a:100 --commit -o "$tmp/x.ring"
run 64 ring bogus "$ring"
run 64 ring
run 64 ring show
run 64 ring diff "$ring"

finish test_cairnctl_ring
