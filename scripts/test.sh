#!/usr/bin/env bash
# The test command (README, CI): install what the build and the tests need on Debian 12,
# build with -Werror, run every test (unit + integration against a real PostgreSQL 15 with
# wal2json), then build again with AddressSanitizer + UBSan and run the tests there too.
#
#   bash scripts/test.sh                 everything
#   PGCDC_SKIP_ASAN=1 bash scripts/test.sh         skip the sanitizer build
#   PGCDC_ASAN_INTEGRATION=0 bash scripts/test.sh  sanitizer build runs unit tests only
#   PGCDC_ASAN_INTEGRATION=all bash scripts/test.sh  sanitizer build runs every integration file
#   PGCDC_FORCE_APT=1 bash scripts/test.sh         run apt-get even if all is installed
#   PGCDC_TEST_BUILD_DIR=build-x bash scripts/test.sh  build in build-x and build-x-asan
#
# Exits non-zero if anything fails to install, build or pass.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
JOBS=$(nproc 2>/dev/null || echo 2)
BUILD="$ROOT/${PGCDC_TEST_BUILD_DIR:-build}"
START=$(date +%s)

log() { printf '\n== %s (%ds)\n' "$*" "$(($(date +%s) - START))"; }

# --- dependencies -------------------------------------------------------------------------
PKGS=(
  build-essential cmake pkg-config
  postgresql-15 postgresql-15-wal2json postgresql-contrib libpq-dev
  librdkafka-dev libcjson-dev libmicrohttpd-dev kcat
  libcurl4-openssl-dev libssl-dev zlib1g-dev
  python3 python3-pytest python3-psycopg2 python3-yaml systemd
  procps curl util-linux
)

# The S3 sink's tests run s3rver and DuckDB from npm (tests/s3/package.json): Debian's
# nodejs and npm, unless a node is on the PATH already.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ] || [ "${PGCDC_FORCE_APT:-0}" = 1 ]; then
  log "installing: ${missing[*]:-(forced) ${PKGS[*]}}"
  SUDO=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
      SUDO=(sudo -n)
    else
      echo "error: missing packages (${missing[*]}) and not root; install them and rerun" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The tests start their own throwaway clusters: Debian's default 15/main is not wanted.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
      "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/pgcdc-tests.conf >/dev/null
  fi
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PKGS[@]}" </dev/null
fi

if [ ! -x "$ROOT/tests/s3/node_modules/.bin/s3rver" ]; then
  log "npm install (tests/s3: s3rver, @duckdb/node-api)"
  (cd "$ROOT/tests/s3" && npm install --no-audit --no-fund)
fi

failed=0
summaries=()

run_ctest() { # label, build dir, ctest args...
  local label=$1 dir=$2
  shift 2
  log "ctest: $label"
  local out
  out=$(mktemp)
  set +e
  (cd "$dir" && ctest --output-on-failure "$@") 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  set -e
  summaries+=("$label: $(grep -E 'tests passed|No tests were found' "$out" | tail -1)")
  rm -f "$out"
  if [ "$rc" != 0 ]; then
    failed=1
  fi
}

# --- release build, all tests ----------------------------------------------------------------
log "build (RelWithDebInfo, -Werror)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$JOBS"

# Unit tests in parallel; integration tests one at a time (they measure time and memory
# on a 2-core machine).
run_ctest "unit" "$BUILD" -L unit -j"$JOBS"
run_ctest "integration" "$BUILD" -L integration

# --- sanitizers ------------------------------------------------------------------------------
if [ "${PGCDC_SKIP_ASAN:-0}" != 1 ]; then
  log "build (AddressSanitizer + UBSan)"
  cmake -S "$ROOT" -B "$BUILD-asan" -DCMAKE_BUILD_TYPE=Debug -DPGCDC_SANITIZE=ON >/dev/null
  cmake --build "$BUILD-asan" -j"$JOBS"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_ctest "unit (asan)" "$BUILD-asan" -L unit -j"$JOBS"
  if [ "${PGCDC_ASAN_INTEGRATION:-1}" = 1 ]; then
    # Under ASan, one integration file per module's real traffic: the core stream and its
    # values, every sink, replay and verify, the source sessions, the slot record, faults
    # in the file sink, secrets. The repeated-kill loops, outages and timing tests
    # (test_crash, test_poll, test_snapshot_resume, ...) run the same C paths as these and
    # take most of the time, so they run in the release pass only and the whole CI run stays
    # under 25 minutes. PGCDC_ASAN_INTEGRATION=all runs every file (but test_big_txn, whose
    # RSS limit means nothing under ASan, and test_deploy, which checks the release binary).
    asan_its='test_(stream_basic|fidelity|cutover|replay_apply|replay_copy|verify|kafka_content|http_sink|s3_crash|source_sessions|rotation_fault|slot_record|secrets|migrate)$'
    run_ctest "integration (asan)" "$BUILD-asan" -L integration -R "integration.$asan_its"
  elif [ "${PGCDC_ASAN_INTEGRATION}" = all ]; then
    run_ctest "integration (asan)" "$BUILD-asan" -L integration -E 'test_big_txn|test_deploy'
  fi
fi

log "summary"
for s in "${summaries[@]}"; do
  echo "  $s"
done
if [ "$failed" != 0 ]; then
  echo "FAILED ($(($(date +%s) - START))s)"
  exit 1
fi
echo "all tests passed ($(($(date +%s) - START))s)"
