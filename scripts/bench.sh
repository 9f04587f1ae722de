#!/usr/bin/env bash
# The pgcdc benchmark: pgcdc against pg_recvlogical on the same slot contents, side by side.
#
#   bash scripts/bench.sh                        everything (about 10 minutes on 2 cores)
#   BENCH_SCALE=0.1 bash scripts/bench.sh        a quick run: every size x0.1
#   bash scripts/bench.sh throughput decode      only some modes
#                                                (throughput latency bigtxn decode wholerun snapshot)
#
# Builds an optimised pgcdc (Release) in $BENCH_BUILD_DIR (default build-bench), starts a
# throwaway PostgreSQL 15 + wal2json, and runs scripts/bench.py: see its docstring for what
# each mode measures and for the other BENCH_* knobs. Prints one table per mode and one
# PASS/MISS line per target; the exit code does not depend on the targets (the numbers of
# a shared 2-core machine are no basis for failing a build). Results and the machine they
# came from go in docs/benchmarks.md by hand.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${BENCH_BUILD_DIR:-$ROOT/build-bench}"

die() {
  echo "bench: $*" >&2
  exit 1
}

command -v cmake >/dev/null || die "cmake is needed (bash scripts/test.sh installs the build dependencies)"
[ -x /usr/bin/time ] || die "GNU time is needed to measure CPU and peak RSS: apt-get install time"
command -v kcat >/dev/null || die "kcat is needed for the Kafka latency run: apt-get install kcat"
command -v valgrind >/dev/null || echo "bench: valgrind not found: the decode mode is skipped (apt-get install valgrind)" >&2

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPGCDC_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" --target pgcdc kafka_mock_cluster bench_decode >/dev/null ||
  die "build failed (run: cmake --build $BUILD)"

# The script needs only the standard library; any python3 will do.
exec python3 "$ROOT/scripts/bench.py" --build "$BUILD" "$@"
