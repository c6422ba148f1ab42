#!/bin/bash
# test.sh - the one command that runs every cairn test on a fresh Debian 12
# machine (as root): installs what is missing, then builds and tests twice,
# a release build and an ASan+UBSan build, and prints ctest's summaries.
# Benchmarks (label "bench") run in the release build only.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

jobs=$(nproc)
status=0

run_build() {
    local dir=$1; shift
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j"$jobs" 2>&1 | grep -E 'error|warning' || true
    cmake --build "$dir" -j"$jobs" >/dev/null
}

echo "== release build"
run_build build-release -DCMAKE_BUILD_TYPE=Release
(cd build-release && ctest --output-on-failure -j"$jobs" -LE 'bench|soak|valgrind') || status=1
(cd build-release && ctest --output-on-failure -L bench) || status=1

echo "== ASan+UBSan build"
run_build build-sanitize -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON
(cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j"$jobs" -LE 'bench|soak|valgrind') || status=1

if [ "$status" -ne 0 ]; then
    echo "test.sh: FAILED" >&2
else
    echo "test.sh: all builds passed"
fi
exit "$status"
