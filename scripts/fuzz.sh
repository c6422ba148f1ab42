#!/bin/bash
# scripts/fuzz.sh [EXECS] - runs every libFuzzer target of a fuzz build for
# EXECS executions each (default 100000; the issue's soak: 10000000) on a
# scratch copy of its seed corpus, and prints per target the executions,
# execs/s and the edges covered (libFuzzer's "cov"). Exits 1 when a target
# finds a crash (its input is kept in the scratch directory, printed).
#
#   cmake -S . -B build-fuzz -DCAIRN_FUZZ=ON -DCMAKE_C_COMPILER=clang
#   cmake --build build-fuzz -j2 --target fuzz_config fuzz_dlist \
#       fuzz_ring_parse fuzz_router fuzz_router_session fuzz_node_request
#   CAIRN_FUZZ_BUILD=build-fuzz scripts/fuzz.sh 10000000
set -u
execs=${1:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
build=${CAIRN_FUZZ_BUILD:-$here/build-fuzz}
scratch=$(mktemp -d /tmp/cairn-fuzz-XXXXXX)
# target binary (in the build) and its seed corpus (in the tree)
targets=(
    "common/fuzz_config common/fuzz/corpus"
    "proto/fuzz_dlist proto/fuzz/corpus"
    "placement/fuzz_ring_parse placement/fuzz/corpus"
    "router/fuzz_router router/fuzz/corpus"
    "router/fuzz_router_session router/fuzz/corpus"
    "node/fuzz_node_request node/fuzz/corpus"
)
status=0
printf '%-16s %10s %9s %7s %6s  %s\n' target execs execs/s edges sec result
for entry in "${targets[@]}"; do
    set -- $entry
    binary=$build/$1
    name=$(basename "$1")
    if [ ! -x "$binary" ]; then
        printf '%-16s not built (%s)\n' "$name" "$binary"
        status=1
        continue
    fi
    work=$scratch/$name
    mkdir -p "$work/corpus" "$work/crashes"
    start=$(date +%s.%N)
    "$binary" -runs="$execs" -print_final_stats=1 \
        -artifact_prefix="$work/crashes/" "$work/corpus" \
        "$here/$2" > "$work/log" 2>&1
    rc=$?
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/log" | tail -1)
    edges=$(echo "$done_line" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    rate=$(grep -E '^stat::average_exec_per_sec' "$work/log" |
        awk '{print $2}')
    ran=$(grep -E '^stat::number_of_executed_units' "$work/log" |
        awk '{print $2}')
    result=ok
    if [ $rc -ne 0 ]; then
        result="FOUND: $(ls "$work/crashes" | head -1) in $work/crashes"
        status=1
    fi
    printf '%-16s %10s %9s %7s %6.1f  %s\n' "$name" "${ran:-?}" \
        "${rate:-?}" "${edges:-?}" "$seconds" "$result"
done
[ $status -eq 0 ] && rm -rf "$scratch"
exit $status
