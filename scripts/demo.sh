#!/usr/bin/env bash
# Run pgcdc.
#
#   bash scripts/demo.sh                      see it work: a throwaway local PostgreSQL with
#                                             wal2json in ./.demo, sample tables, a stream of
#                                             sample writes, and the events printed as they
#                                             land in ./pgcdc-data. Ctrl-C stops it all and
#                                             removes the throwaway server.
#   bash scripts/demo.sh -c pgcdc.conf        your own source (source.dsn in the file)
#   PGCDC_SOURCE_DSN=postgres://... bash scripts/demo.sh [-o KEY=VALUE]...
#   bash scripts/demo.sh -o source.dsn=postgres://... [-o KEY=VALUE]...
#
# With a source.dsn given (any of the three ways), this builds pgcdc if needed and runs
# `pgcdc run` with your arguments, nothing else. Extra arguments in demo mode are passed
# to `pgcdc run` too (e.g. -o log.level=debug).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${PGCDC_DEMO_BUILD_DIR:-$ROOT/build}"
[ "${1:-}" = run ] && shift

die() {
  echo "demo: $*" >&2
  exit 1
}

build() {
  if ! command -v cmake >/dev/null || ! pkg-config --exists libpq rdkafka 2>/dev/null; then
    die "building pgcdc needs cmake, pkg-config, libpq-dev and librdkafka-dev: run 'bash scripts/test.sh' once (it installs them) or apt-get install them"
  fi
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  local out
  out=$(mktemp)
  if ! cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" --target pgcdc >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    die "build failed"
  fi
  rm -f "$out"
}

# Does the caller name a source? (environment, -o source.dsn=..., or a -c file setting it)
has_dsn=0
[ -n "${PGCDC_SOURCE_DSN:-}" ] && has_dsn=1
file_has_dsn() { grep -Eq '^[[:space:]]*source\.dsn[[:space:]]*=' "$1" 2>/dev/null; }
prev=""
for a in "$@"; do
  case "$prev" in
    -c | --config) file_has_dsn "$a" && has_dsn=1 ;;
    -o) case "$a" in source.dsn=*) has_dsn=1 ;; esac ;;
  esac
  case "$a" in
    --config=*) file_has_dsn "${a#--config=}" && has_dsn=1 ;;
    -osource.dsn=*) has_dsn=1 ;;
  esac
  prev=$a
done

build
if [ "$has_dsn" = 1 ]; then
  exec "$BUILD/pgcdc" run "$@"
fi

# ---------------------------------------------------------------------------------------
# Demo mode: a throwaway PostgreSQL.

cd "$ROOT"
PGBIN=""
for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
  [ -e "$d/../lib/wal2json.so" ] && [ -x "$d/initdb" ] && PGBIN=$d
done
[ -n "$PGBIN" ] || die "no PostgreSQL with wal2json found: apt-get install postgresql-15 postgresql-15-wal2json"
command -v python3 >/dev/null || die "python3 is needed to show the events"

DEMO="$ROOT/.demo"
mkdir -p "$DEMO"

# PostgreSQL refuses to run as root: as root, the server runs as `postgres`.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (installed with postgresql)"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

# A server left by an interrupted run goes first.
if [ -f "$DEMO/pgdir" ]; then
  old=$(cat "$DEMO/pgdir")
  if [ -f "$old/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$old/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$old"
  rm -f "$DEMO/pgdir"
fi
rm -rf "$DEMO/state" "$DEMO/pgcdc.log"

# The server's directory must be reachable by the user it runs as (a repo under /root is
# not, for `postgres`): then it goes under /tmp.
PGDIR="$DEMO/pg"
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DEMO"; then
  PGDIR=$(mktemp -d /tmp/pgcdc-demo.XXXXXX)
fi
mkdir -p "$PGDIR"
echo "$PGDIR" >"$DEMO/pgdir"
[ "$(id -u)" = 0 ] && chown postgres "$PGDIR"

# The events go to ./pgcdc-data. Clear it only if an earlier demo made it.
if [ -e pgcdc-data ] && [ ! -e "$DEMO/made-pgcdc-data" ]; then
  die "./pgcdc-data exists and was not made by the demo: move it away first"
fi
rm -rf pgcdc-data
mkdir -p pgcdc-data
touch "$DEMO/made-pgcdc-data"

port=54329
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  port=$((port + 1))
done

echo "demo: starting a throwaway PostgreSQL ($("$PGBIN/postgres" --version | awk '{print $3}'), wal2json) on 127.0.0.1:$port in $PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust --auth-host=trust \
  -E UTF8 --locale=C --no-sync >"$DEMO/initdb.log" 2>&1 || {
  cat "$DEMO/initdb.log" >&2
  die "initdb failed"
}
{
  echo "listen_addresses = '127.0.0.1'"
  echo "port = $port"
  echo "unix_socket_directories = '$PGDIR'"
  echo "wal_level = logical"
  echo "max_wal_senders = 4"
  echo "max_replication_slots = 4"
  echo "fsync = off"
  # Newer minor releases only let listed plugins decode.
  if [[ $'\n'"$(as_pg "$PGBIN/postgres" --describe-config 2>/dev/null | cut -f1)"$'\n' == *$'\n'output_plugin_libraries$'\n'* ]]; then
    echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
  fi
} | as_pg tee -a "$PGDIR/data/postgresql.conf" >/dev/null

WRITER_PID=""
PGCDC_PID=""
FOLLOW_PID=""
# shellcheck disable=SC2317 # called through the trap
cleanup() {
  trap - INT TERM EXIT
  set +e
  echo
  if [ -n "$WRITER_PID" ]; then
    kill "$WRITER_PID" 2>/dev/null
    wait "$WRITER_PID" 2>/dev/null
  fi
  if [ -n "$PGCDC_PID" ] && kill -0 "$PGCDC_PID" 2>/dev/null; then
    echo "demo: stopping pgcdc"
    kill -TERM "$PGCDC_PID"
    wait "$PGCDC_PID" 2>/dev/null
  fi
  if [ -n "$FOLLOW_PID" ]; then
    sleep 0.5 # let it print the last events
    kill "$FOLLOW_PID" 2>/dev/null
    wait "$FOLLOW_PID" 2>/dev/null
  fi
  echo "demo: stopping and removing the throwaway PostgreSQL"
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 ||
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$PGDIR" "$DEMO/state"
  rm -f "$DEMO/pgdir"
  echo "demo: the events are still in ./pgcdc-data ($(cat pgcdc-data/*.jsonl* 2>/dev/null | wc -l) events); pgcdc's log is .demo/pgcdc.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w start >/dev/null || {
  cat "$PGDIR/postgres.log" >&2
  die "PostgreSQL did not start"
}

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE shop" >/dev/null
"${PSQL[@]}" -d shop >/dev/null <<'SQL'
CREATE TABLE customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers,
  amount numeric(12, 2) NOT NULL,
  status text NOT NULL DEFAULT 'new',
  items jsonb
);
INSERT INTO customers (name, email) VALUES
  ('Ada Lovelace', 'ada@example.com'),
  ('Grace Hopper', 'grace@example.com'),
  ('Edsger Dijkstra', 'edsger@example.com');
SQL

# Sample writes, about two transactions a second, until Ctrl-C.
(
  i=0
  while :; do
    i=$((i + 1))
    sql="BEGIN;
      INSERT INTO orders (customer_id, amount, items)
        SELECT id, round((random() * 200)::numeric, 2), '{\"sku\": \"A-$i\", \"qty\": 1}'
        FROM customers ORDER BY random() LIMIT 1;
      UPDATE orders SET status = 'paid' WHERE id = (SELECT max(id) - 1 FROM orders);
      COMMIT;"
    if [ $((i % 5)) = 0 ]; then
      sql="$sql DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status = 'paid');"
    fi
    if [ $((i % 7)) = 0 ]; then
      sql="$sql INSERT INTO customers (name, email) VALUES ('Customer $i', 'c$i@example.com');"
    fi
    "${PSQL[@]}" -d shop -c "$sql" >/dev/null 2>&1 || true
    sleep 0.5
  done
) &
WRITER_PID=$!

echo "demo: running pgcdc (snapshot of the existing rows, then every change); Ctrl-C to stop"
echo "demo: events are in ./pgcdc-data, one JSON per line; shown here as: op schema.table row"
# pgcdc in its own session, so Ctrl-C reaches only this script, which then stops pgcdc
# with SIGTERM (flush, confirm, exit 0) before the server goes away.
setsid "$BUILD/pgcdc" run \
  -o "source.dsn=host=127.0.0.1 port=$port dbname=shop user=postgres" \
  -o sink.file.dir=./pgcdc-data -o state.dir="$DEMO/state" "$@" \
  </dev/null 2>"$DEMO/pgcdc.log" &
PGCDC_PID=$!

# The follower runs as a job the script waits for, so that Ctrl-C (or SIGTERM to this
# script) runs the cleanup at once. It returns by itself if pgcdc exits.
python3 "$ROOT/scripts/follow_segments.py" --log "$DEMO/pgcdc.log" --pid "$PGCDC_PID" ./pgcdc-data &
FOLLOW_PID=$!
set +e
wait "$FOLLOW_PID"
FOLLOW_PID=""
wait "$PGCDC_PID"
rc=$?
PGCDC_PID=""
echo "demo: pgcdc exited with status $rc"
exit "$rc"
