#!/usr/bin/env bash
# Apply rate of `pgcdc replay` against PostgreSQL's own logical replication, on one workload.
#
#   bash scripts/bench_replay.sh                 scale 10, 40000 pgbench transactions
#   BENCH_SCALE=50 BENCH_TXNS=200000 bash scripts/bench_replay.sh
#   BENCH_NO_DOC=1 bash scripts/bench_replay.sh   print only; leave docs/benchmarks.md alone
#   bash scripts/bench_replay.sh migrate         `pgcdc migrate` vs Debian's `pgcopydb clone`
#                                                (BENCH_MIGRATE_SCALE=20: 2,000,000 accounts;
#                                                targets in a second cluster)
#   bash scripts/bench_replay.sh copy            replay's COPY path vs psql \copy ... from
#                                                (BENCH_COPY_SCALE=10: 1,000,000 accounts)
#
# One throwaway cluster (temp dir, free port, 127.0.0.1) with three databases:
#   src_W       pgbench -i, then the measured workload W (pgbench's built-in tpcb-like:
#               per transaction 3 updates + 1 insert, with hot rows; simple-update: 1
#               update of a random account + 1 insert)
#   tgt_replay_W and tgt_native_W: copies of src_W taken before the workload (CREATE
#               DATABASE ... TEMPLATE), so both start from the same rows
# Before the workload a pgcdc slot (wal2json) and a pgoutput slot + subscription (disabled)
# are created, so both sides have the same backlog to apply afterwards:
#   pgcdc:  `pgcdc run --end-lsn L` writes the files (not timed), then
#           `pgcdc replay --end-lsn L` into tgt_replay is timed, start to exit;
#   native: after ALTER SUBSCRIPTION ... ENABLE, timed from the moment the apply worker
#           runs until tgt_native holds every transaction (pgbench_history's row count
#           equals the source's; every pgbench transaction inserts one history row and is
#           applied atomically, in order).
#   replay with -o replay.group_rows=1 (one statement per row) is timed too, for scale.
# Both sides then go through `pgcdc verify`. The result is printed and written to
# docs/benchmarks.md under "## Replay vs native apply" (that section only; the rest of the
# file is kept).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${PGCDC_BENCH_BUILD_DIR:-$ROOT/build}"
MODE="${1:-replay}"
SCALE="${BENCH_SCALE:-10}"
TXNS="${BENCH_TXNS:-40000}"
CLIENTS="${BENCH_CLIENTS:-4}"

die() {
  echo "bench_replay: $*" >&2
  exit 1
}

PGBIN="${PGCDC_PG_BIN:-}"
if [ -z "$PGBIN" ]; then
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -e "$d/../lib/wal2json.so" ]; then
      PGBIN=$d
      break
    fi
  done
fi
[ -n "$PGBIN" ] || die "no PostgreSQL with wal2json under /usr/lib/postgresql (bash scripts/test.sh installs it)"

if [ ! -x "$BUILD/pgcdc" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" --target pgcdc >/dev/null
fi
PGCDC="$BUILD/pgcdc"

WORK=$(mktemp -d /tmp/pgcdc-bench-replay-XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$WORK"
  AS=(runuser -u postgres --)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PGDATA="$WORK/data"

PGDATA2="$WORK/data2" # migrate mode's target cluster
cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  [ ! -d "$PGDATA2" ] || "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA2" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql_() { # db, sql...
  local db=$1
  shift
  "${AS[@]}" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres -d "$db" "$@"
}
now() { date +%s.%N; }
# CPU seconds (user + system) used so far by process PID and its descendants, those
# running and those that have exited (reaped): differences over a stretch of time are what
# the tree used in it.
tree_cpu() {
  python3 - "$1" <<'PY'
import os, sys
def cpu(pid, own):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        kids = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
    except OSError:
        return 0
    t = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return t + sum(cpu(int(k), False) for k in kids)
print(round(cpu(int(sys.argv[1]), True) / os.sysconf("SC_CLK_TCK"), 2))
PY
}
# The server's: the postmaster's tree (both clusters' in migrate mode).
server_cpu() {
  local t
  t=$(tree_cpu "$(head -1 "$PGDATA/postmaster.pid")")
  [ ! -f "$PGDATA2/postmaster.pid" ] || t=$(calc "$t + $(tree_cpu "$(head -1 "$PGDATA2/postmaster.pid")")")
  echo "$t"
}
calc() { python3 -c "print($1)"; }

# start_cluster DATADIR PORT: a throwaway cluster (trust auth, fsync off, autovacuum off,
# logical decoding with wal2json allowed) listening on 127.0.0.1:PORT and a socket in $WORK.
start_cluster() {
  local data=$1 port=$2
  "${AS[@]}" "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$WORK'"
    echo "wal_level = logical"
    echo "max_wal_senders = 10"
    echo "max_replication_slots = 10"
    echo "max_logical_replication_workers = 4"
    echo "shared_buffers = '256MB'"
    echo "max_wal_size = '4GB'"
    echo "fsync = off"
    echo "autovacuum = off"
    if "${AS[@]}" "$PGBIN/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
      echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
    fi
  } >>"$data/postgresql.conf"
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$data" -l "$data.log" -w start >/dev/null
}

echo "== cluster in $WORK (port $PORT), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
start_cluster "$PGDATA" "$PORT"

# migrate mode: one source database of several tables (pgbench -i: accounts, tellers,
# branches, history, with keys and a foreign key added), moved twice into empty databases
# of a second cluster on the same machine (BENCH_MIGRATE_ONE_CLUSTER=1: of the same one):
#   pgcdc migrate, timed from start until its "following" line (schema, bulk load,
#   post-data and ANALYZE done: caught up), then ended with `pgcdc cutover` (not timed);
#   pgcopydb clone (Debian's package), timed start to exit.
# Both targets then verify equal to the source. The CPU seconds of each side over its timed
# stretch are printed too (the client's process tree; the server's: the postmaster's tree).
# Each run is one round, migrate first: run it several times.
bench_migrate() {
  local scale="${BENCH_MIGRATE_SCALE:-20}"
  command -v pgcopydb >/dev/null || die "pgcopydb is not installed (apt-get install -y pgcopydb)"
  local src=msrc tp=mtgt_pgcdc tc=mtgt_copydb tport=$PORT
  # A migration moves a database to another server: by default the targets live in a
  # second cluster, so the source's walsender does not also read the targets' WAL.
  # BENCH_MIGRATE_ONE_CLUSTER=1 keeps all three databases in one cluster.
  if [ -z "${BENCH_MIGRATE_ONE_CLUSTER:-}" ]; then
    tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    start_cluster "$PGDATA2" "$tport"
    echo "== migrate: target cluster on port $tport"
  fi
  local dsn_src="host=127.0.0.1 port=$PORT user=postgres dbname=$src"
  local dsn_tp="host=127.0.0.1 port=$tport user=postgres dbname=$tp"
  local dsn_tc="host=127.0.0.1 port=$tport user=postgres dbname=$tc"
  echo "== migrate: pgbench -i -s $scale, foreign keys"
  psql_ postgres -c "CREATE DATABASE $src"
  "${AS[@]}" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$tport" -U postgres -d postgres \
    -c "CREATE DATABASE $tp" -c "CREATE DATABASE $tc" >/dev/null
  "${AS[@]}" "$PGBIN/pgbench" -i -q -I dtgvpf -s "$scale" -h "$WORK" -p "$PORT" -U postgres "$src" >/dev/null 2>&1
  psql_ "$src" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" -c "VACUUM ANALYZE"
  local rows
  rows=$(psql_ "$src" -c "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM pgbench_tellers) + (SELECT count(*) FROM pgbench_branches)")

  echo "== migrate: pgcdc migrate (start to following)"
  local dir="$WORK/migrate" log="$WORK/migrate.log" t0 t1 c0 c1
  mkdir -p "$dir"
  c0=$(server_cpu)
  t0=$(now)
  "$PGCDC" migrate --source "$dsn_src" --target "$dsn_tp" --dir "$dir/d" \
    -o "migrate.pg_dump=$PGBIN/pg_dump" -o source.slot=bench_migrate ${BENCH_MIGRATE_OPTS:-} 2>"$log" &
  local pid=$!
  # Waiting costs the machine nothing while migrate runs: tail -f follows the log through
  # inotify (a loop of grep and sleep took a tenth of these two cores from migrate).
  grep -q -m1 'migrate: following' < <(tail -n +1 -f --pid="$pid" "$log") ||
    die "pgcdc migrate exited: $(tail -3 "$log")"
  t1=$(now)
  MIG_S=$(calc "$t1 - $t0")
  c1=$(server_cpu)
  MIG_SRV=$(calc "round($c1 - $c0, 2)")
  MIG_CPU=$(tree_cpu "$pid") # migrate, capture, replay, the tools
  "$PGCDC" cutover --dir "$dir/d" >/dev/null || die "cutover failed: $(tail -3 "$log")"
  wait "$pid" || die "pgcdc migrate did not exit 0"
  [ -z "${BENCH_KEEP_LOG:-}" ] || cp "$log" "$BENCH_KEEP_LOG"
  # Where the time went: the phase lines, as logged.
  grep -E 'migrate: |snapshot (done|complete)|replay done' "$log" | sed -E 's/^ts=[0-9-]+T([0-9:.]+)Z.*msg="([^"]*)".*/  \1 \2/' || true

  echo "== migrate: pgcopydb clone"
  c0=$(server_cpu)
  t0=$(now)
  (cd "$WORK" && /usr/bin/time -o "$WORK/copydb.cpu" -f "%U %S" "${AS[@]}" env PGCOPYDB_SOURCE_PGURI="$dsn_src" PGCOPYDB_TARGET_PGURI="$dsn_tc" \
    pgcopydb clone --dir "$WORK/copydb" --no-owner >"$WORK/copydb.log" 2>&1) ||
    die "pgcopydb clone failed: $(tail -3 "$WORK/copydb.log")"
  t1=$(now)
  COPYDB_S=$(calc "$t1 - $t0")
  c1=$(server_cpu)
  COPYDB_CPU=$(awk '{print $1 + $2}' "$WORK/copydb.cpu")
  COPYDB_SRV=$(calc "round($c1 - $c0, 2)")

  echo "== migrate: verify"
  local out
  out=$("$PGCDC" verify --source "$dsn_src" --target "$dsn_tp" 2>&1) || die "migrate target differs: $out"
  out=$("$PGCDC" verify --source "$dsn_src" --target "$dsn_tc" 2>&1) || die "pgcopydb target differs: $out"
  echo
  printf '%-10s %10s %12s %14s %7s\n' scale rows "migrate s" "pgcopydb s" ratio
  printf '%-10s %10s %12.2f %14.2f %7s\n' "$scale" "$rows" "$MIG_S" "$COPYDB_S" "$(calc "round($COPYDB_S / $MIG_S, 2)")"
  echo "(ratio = pgcopydb time / migrate time; 1 or above: migrate is no slower)"
  echo "CPU s, client (with its children) / server: migrate $MIG_CPU / $MIG_SRV (start to" \
    "following), pgcopydb $COPYDB_CPU / $COPYDB_SRV"
}

# copy mode: pgbench_accounts captured once by a snapshot (`pgcdc run`, not timed), then
# loaded into the same index-less table (pre-data only) two ways, interleaved, 3 rounds:
#   pgcdc replay (its COPY path, from the captured events) and psql \copy ... from a file
#   written by COPY ... TO on the source. Best of 3 each; both then verify equal. Each load
#   also prints its CPU seconds: the client's (replay or psql) and the server backend's, which
#   compare on a busy machine where wall time does not.
bench_copy() {
  local scale="${BENCH_COPY_SCALE:-10}" src=csrc dir="$WORK/copy"
  local dsn_src="host=127.0.0.1 port=$PORT user=postgres dbname=$src"
  echo "== copy: pgbench -i -s $scale"
  psql_ postgres -c "CREATE DATABASE $src"
  "${AS[@]}" "$PGBIN/pgbench" -i -q -s "$scale" -h "$WORK" -p "$PORT" -U postgres "$src" >/dev/null 2>&1
  mkdir -p "$dir"
  chmod 777 "$dir"
  "${AS[@]}" "$PGBIN/pg_dump" -h "$WORK" -p "$PORT" -U postgres --section=pre-data -t pgbench_accounts "$src" >"$dir/pre.sql"
  psql_ "$src" -c "COPY pgbench_accounts TO '$dir/accounts.copy'"
  local end
  end=$(psql_ "$src" -c "SELECT pg_current_wal_lsn()")
  "$PGCDC" run --end-lsn "$end" -o "source.dsn=$dsn_src" -o source.slot=bench_copy \
    -o snapshot.mode=initial -o source.tables.include=public.pgbench_accounts \
    -o "state.dir=$dir/state" -o "sink.file.dir=$dir/data" -o log.level=error
  end=$(psql_ "$src" -c "SELECT pg_current_wal_lsn()") # past the slot's snapshot point
  local rows best_r="" best_p="" t0 t1 s c0 c1 cl
  rows=$(psql_ "$src" -c "SELECT count(*) FROM pgbench_accounts")
  for round in 1 2 3; do
    for who in replay psql; do
      local db="ctgt_${who}_$round"
      psql_ postgres -c "CREATE DATABASE $db"
      psql_ "$db" -f "$dir/pre.sql" >/dev/null
      c0=$(server_cpu)
      t0=$(now)
      if [ "$who" = replay ]; then
        /usr/bin/time -o "$WORK/client.cpu" -f "%U %S" "$PGCDC" replay --input "$dir/data" \
          --target "host=127.0.0.1 port=$PORT user=postgres dbname=$db" --end-lsn "$end" -o log.level=warn
      else
        /usr/bin/time -o "$WORK/client.cpu" -f "%U %S" "${AS[@]}" "$PGBIN/psql" -X -q -h "$WORK" -p "$PORT" \
          -U postgres -d "$db" -c "\\copy pgbench_accounts from '$dir/accounts.copy'"
      fi
      t1=$(now)
      c1=$(server_cpu)
      s=$(calc "$t1 - $t0")
      cl=$(awk '{print $1 + $2}' "$WORK/client.cpu")
      echo "   round $round: $who $(calc "round($s, 2)") s; CPU s: client $cl, server $(calc "round($c1 - $c0, 2)")"
      [ "$(psql_ "$db" -c "SELECT count(*) FROM pgbench_accounts")" = "$rows" ] || die "$who did not load every row"
      if [ "$who" = replay ]; then
        [ -z "$best_r" ] || [ "$(calc "$s < $best_r")" = True ] && best_r=$s
      else
        [ -z "$best_p" ] || [ "$(calc "$s < $best_p")" = True ] && best_p=$s
      fi
    done
  done
  "$PGCDC" verify --source "$dsn_src" --target "host=127.0.0.1 port=$PORT user=postgres dbname=ctgt_replay_3" --table public.pgbench_accounts >/dev/null 2>&1 ||
    die "replay's target differs from the source"
  echo
  printf '%-10s %10s %12s %12s %7s\n' scale rows "replay s" "\\copy s" ratio
  printf '%-10s %10s %12.2f %12.2f %7s\n' "$scale" "$rows" "$best_r" "$best_p" "$(calc "round($best_p / $best_r, 2)")"
  echo "(best of 3, interleaved; ratio = \\copy time / replay time; target: 0.9 or above)"
}

if [ "$MODE" = copy ]; then
  bench_copy
  exit 0
fi

if [ "$MODE" = migrate ]; then
  bench_migrate
  exit 0
fi

# measure WORKLOAD: fresh databases, both capture paths set up, the workload, then both
# applies timed. Sets EVENTS HIST REPLAY_S SINGLE_S NATIVE_S.
measure() {
  local w=$1
  local src="src_${w//-/_}" rep="tgt_replay_${w//-/_}" nat="tgt_native_${w//-/_}"
  local one="tgt_single_${w//-/_}"
  local dsn_src="host=127.0.0.1 port=$PORT user=postgres dbname=$src"
  local dsn_rep="host=127.0.0.1 port=$PORT user=postgres dbname=$rep"
  local dsn_nat="host=127.0.0.1 port=$PORT user=postgres dbname=$nat"
  local dsn_one="host=127.0.0.1 port=$PORT user=postgres dbname=$one"
  local slot="bench_${w//-/_}" dir="$WORK/pgcdc-$w"
  echo "== $w: pgbench -i -s $SCALE"
  psql_ postgres -c "CREATE DATABASE $src"
  "${AS[@]}" "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$WORK" -p "$PORT" -U postgres "$src" >/dev/null 2>&1
  psql_ postgres -c "CREATE DATABASE $rep TEMPLATE $src" -c "CREATE DATABASE $nat TEMPLATE $src" \
    -c "CREATE DATABASE $one TEMPLATE $src"

  # Both capture paths start here, before the workload. In one cluster a subscription
  # cannot create its slot itself (it would wait on itself): the slot is made first.
  psql_ "$src" -c "CREATE PUBLICATION pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" \
    -c "SELECT pg_create_logical_replication_slot('${slot}_native', 'pgoutput')" >/dev/null
  psql_ "$nat" -c "CREATE SUBSCRIPTION sub_${slot} CONNECTION '$dsn_src' PUBLICATION pub WITH (create_slot = false, slot_name = '${slot}_native', copy_data = false, enabled = false)" 2>/dev/null
  mkdir -p "$dir"
  "$PGCDC" slot create -o "source.dsn=$dsn_src" -o "source.slot=$slot" -o "state.dir=$dir/state" \
    -o "sink.file.dir=$dir/data"

  echo "== $w: workload, $TXNS transactions, $CLIENTS clients"
  "${AS[@]}" "$PGBIN/pgbench" -n -b "$w" -c "$CLIENTS" -j 2 -t $((TXNS / CLIENTS)) -h "$WORK" -p "$PORT" -U postgres "$src" >/dev/null 2>&1
  local end
  end=$(psql_ "$src" -c "SELECT pg_current_wal_lsn()")
  HIST=$(psql_ "$src" -c "SELECT count(*) FROM pgbench_history")

  local t0 t1
  t0=$(now)
  "$PGCDC" run --end-lsn "$end" -o "source.dsn=$dsn_src" -o "source.slot=$slot" -o snapshot.mode=never \
    -o "state.dir=$dir/state" -o "sink.file.dir=$dir/data" -o log.level=warn
  t1=$(now)
  EVENTS=$(cat "$dir"/data/*.jsonl* | wc -l)
  echo "   end LSN $end, $HIST transactions, $EVENTS events written by pgcdc run in $(calc "round($t1 - $t0, 2)") s (not compared)"

  echo "== $w: pgcdc replay"
  t0=$(now)
  "$PGCDC" replay --input "$dir/data" --target "$dsn_rep" --end-lsn "$end" -o log.level=warn
  t1=$(now)
  REPLAY_S=$(calc "$t1 - $t0")
  [ "$(psql_ "$rep" -c "SELECT count(*) FROM pgbench_history")" = "$HIST" ] || die "replay did not apply everything"

  echo "== $w: pgcdc replay -o replay.group_rows=1 (one statement per row)"
  t0=$(now)
  "$PGCDC" replay --input "$dir/data" --target "$dsn_one" --end-lsn "$end" -o log.level=warn -o replay.group_rows=1
  t1=$(now)
  SINGLE_S=$(calc "$t1 - $t0")

  echo "== $w: native logical replication (pgoutput, apply worker)"
  psql_ "$nat" -c "ALTER SUBSCRIPTION sub_${slot} ENABLE"
  # The clock starts once the apply worker runs (the launcher may take seconds to start it;
  # that is not apply time, and what the worker applies meanwhile counts for native).
  while [ -z "$(psql_ "$nat" -c "SELECT pid FROM pg_stat_subscription WHERE subname = 'sub_${slot}' AND pid IS NOT NULL")" ]; do
    sleep 0.01
  done
  t0=$(now)
  while [ "$(psql_ "$nat" -c "SELECT count(*) FROM pgbench_history")" != "$HIST" ]; do
    sleep 0.02
  done
  t1=$(now)
  NATIVE_S=$(calc "$t1 - $t0")
  psql_ "$nat" -c "ALTER SUBSCRIPTION sub_${slot} DISABLE"

  echo "== $w: verify"
  local out
  out=$("$PGCDC" verify --source "$dsn_src" --target "$dsn_rep" 2>&1) || die "replay target differs: $out"
  out=$("$PGCDC" verify --source "$dsn_src" --target "$dsn_nat" 2>&1) || die "native target differs: $out"
  out=$("$PGCDC" verify --source "$dsn_src" --target "$dsn_one" 2>&1) || die "replay (group_rows=1) target differs: $out"
}

ROWS=""
MD=""
printf -v HEADER '%-14s %8s %9s %9s %11s %9s %9s %11s %7s' workload txns events "replay s" "replay r/s" "1/stmt s" "native s" "native r/s" ratio
for w in tpcb-like simple-update; do
  measure "$w"
  ratio=$(calc "round($NATIVE_S / $REPLAY_S, 2)")
  rrate=$(calc "int($EVENTS / $REPLAY_S)")
  nrate=$(calc "int($EVENTS / $NATIVE_S)")
  ROWS+=$(printf '%-14s %8s %9s %9.2f %11s %9.2f %9.2f %11s %7s' "$w" "$HIST" "$EVENTS" "$REPLAY_S" "$rrate" "$SINGLE_S" "$NATIVE_S" "$nrate" "$ratio")$'\n'
  MD+="| $w | $HIST | $EVENTS | $(printf '%.2f' "$REPLAY_S") | $rrate | $(printf '%.2f' "$SINGLE_S") | $(printf '%.2f' "$NATIVE_S") | $nrate | **$ratio** |"$'\n'
done
echo
echo "$HEADER"
printf '%s' "$ROWS"
echo "(ratio = native time / replay time; above 1 means replay is faster)"

[ "${BENCH_NO_DOC:-0}" = 1 ] && exit 0
DOC="$ROOT/docs/benchmarks.md"
SECTION=$(
  cat <<EOF
## Replay vs native apply

\`bash scripts/bench_replay.sh\` (BENCH_SCALE=$SCALE BENCH_TXNS=$TXNS BENCH_CLIENTS=$CLIENTS), $(date -u +%Y-%m-%d),
$(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), one cluster (fsync off,
autovacuum off) holding the source and both targets. For each workload the same backlog,
captured before either side starts applying, is applied by:

- **pgcdc replay**: \`pgcdc replay --end-lsn\` from the file sink's segments (written
  beforehand by \`pgcdc run\`, not timed), start to exit, default settings;
- **native**: a pgoutput slot and a disabled \`CREATE SUBSCRIPTION\` made before the
  workload; after \`ALTER SUBSCRIPTION ... ENABLE\`, timed from the moment its apply
  worker runs until the target holds every transaction.

Both targets then verify equal to the source (\`pgcdc verify\`).

| workload | transactions | row changes | replay s | replay rows/s | replay, 1 row per statement, s | native s | native rows/s | native time / replay time |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
${MD}
- *tpcb-like* (pgbench's default): per transaction 3 updates (an account, a teller, a
  branch) and 1 insert; at scale $SCALE the $SCALE branches and $((SCALE * 10)) tellers are hot rows.
- *simple-update*: per transaction 1 update of a random account (of $((SCALE * 100000))) and 1
  insert; hardly any row is changed twice.

Where the difference comes from: replay groups whole source transactions into target
transactions of about 5000 rows (\`replay.batch_rows\`), sends everything through libpq's
pipeline mode (no round trip per row) with prepared statements, and within a batch
applies each table's changes as multi-row statements (\`replay.group_rows\`, 64):
\`INSERT ... VALUES (..), (..)\`, \`UPDATE ... FROM (VALUES ..)\`, \`DELETE ... IN (..)\`,
where a later update of a row in the same statement replaces the earlier one (the hot
branch and teller rows of tpcb-like collapse). The native apply worker commits every
source transaction and applies row by row. The "1 row per statement" column is replay
with \`-o replay.group_rows=1\`: batched and pipelined, but one statement per row (what
replay does when the target role may not set \`session_replication_role\`). Native
replication decodes the WAL as it
applies, while replay reads files that \`pgcdc run\` wrote first: capture is not part of
this comparison.
EOF
)
python3 - "$DOC" "$SECTION" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip("\n") + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pat = re.compile(r"^## Replay vs native apply\n.*?(?=^## |\Z)", re.S | re.M)
if pat.search(text):
    text = pat.sub(lambda m: section + "\n", text, count=1).rstrip("\n") + "\n"
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
echo "wrote the \"Replay vs native apply\" section of docs/benchmarks.md"
