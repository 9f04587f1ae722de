"""Helpers for the snapshot / selection / type-fidelity tests (test_fidelity.py,
test_snapshot.py, test_selection.py), on top of harness.py.

- expected_value(): what docs/events.md says an event carries for a column, given the column's
  `::text` form read from the source and the kind of its type.
- column_kinds() / source_texts(): the kinds and `::text` values of a table, from the source.
- apply_events(): rebuild a table's content from its events (r/c/u/d applied by key in file
  order), failing on a gap or an overlap (an `r`/`c` for a key that is already there, a
  `u`/`d` for a key that is not).
- Churn: a writer thread that updates, deletes and inserts rows of an existing table
  (including rows the snapshot is reading) until stopped.
- wait_snapshot_last(): wait for the snapshot's final row in the segment files.
"""

import gc
import os
import random
import re
import threading

import psycopg2

import harness as h

# Type categories by the base type's oid (domains resolved to their base type).
INT_OIDS = {20, 21, 23, 26}  # int8, int2, int4, oid
DIGIT_OIDS = {700, 701, 1700}  # float4, float8, numeric
BOOL_OID = 16


def column_kinds(cluster, table):
    """{column: (kind, type name)} for table ("schema.table" or a bare name) where kind is
    'int', 'digits', 'bool' or 'text', from the column's type after resolving domains.
    Also returns the declared type's kind separately for domains: (kind, typname, is_domain)."""
    rows = cluster.sql(
        """
        WITH RECURSIVE base(attname, t, declared, depth) AS (
            SELECT a.attname, a.atttypid, a.atttypid, 0 FROM pg_attribute a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
          UNION ALL
            SELECT b.attname, ty.typbasetype, b.declared, b.depth + 1 FROM base b
            JOIN pg_type ty ON ty.oid = b.t WHERE ty.typtype = 'd')
        SELECT DISTINCT ON (attname) attname, t::int, format_type(declared, NULL),
               (SELECT typtype = 'd' FROM pg_type WHERE oid = declared)
        FROM base ORDER BY attname, depth DESC
        """, (table,))
    out = {}
    for col, oid, tname, is_domain in rows:
        if oid in INT_OIDS:
            kind = "int"
        elif oid in DIGIT_OIDS:
            kind = "digits"
        elif oid == BOOL_OID:
            kind = "bool"
        else:
            kind = "text"
        out[col] = (kind, tname, is_domain)
    return out


def source_texts(cluster, table, key="id", where=None):
    """{int(key text): {column: text or None}} — every column's text output form (see
    output_text), read in a plain session with the settings every pgcdc source session pins
    (DateStyle ISO, IntervalStyle postgres, TimeZone UTC, extra_float_digits 3: see
    docs/events.md) and bytea_output=hex."""
    cols = [r[0] for r in cluster.sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT "
        "attisdropped ORDER BY attnum", (table,))]
    sel = ", ".join(output_text(quote_ident(c)) for c in cols)
    q = "SELECT %s FROM %s" % (sel, table)
    if where:
        q += " WHERE " + where
    out = {}
    c = cluster.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SET bytea_output = 'hex'; SET DateStyle = 'ISO'; "
                        "SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; "
                        "SET extra_float_digits = 3")
            cur.execute(q)
            for row in cur.fetchall():
                d = dict(zip(cols, row))
                out[int(d[key])] = d
    finally:
        c.close()
    return out


def output_text(expr):
    """SQL for the text output form of expr: `expr::text` for every type, except that the
    cast to text is not the output function for two types, where docs/events.md's
    "PostgreSQL's text output form" is the output function's: char(n) (the cast trims the
    padding) and inet (the cast's text(inet) always adds the netmask, /32 or /128).
    format('%s') calls the output function for every type, so it is used throughout (NULL
    stays NULL)."""
    # num_nulls, not IS NULL: a composite whose fields are all NULL IS NULL, but is not NULL.
    return "CASE WHEN num_nulls(%s) = 1 THEN NULL ELSE format('%%s', %s) END" % (expr, expr)


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


NON_FINITE = {"NaN", "Infinity", "-Infinity"}


def expected_value(text, kind, nonfinite_as_null=True):
    """The JSON value docs/events.md prescribes for a column whose `::text` form is `text`:
    integers as JSON integers with the exact digits, numeric/float as a string of the
    digits, booleans true/false, NULL null, everything else the text form.

    nonfinite_as_null: wal2json before 2.6 sends numeric/float NaN and ±Infinity as null
    and cannot be told otherwise; README.md documents that pgcdc then emits null (for
    snapshot rows too, so both agree). With a wal2json that keeps them, they are strings."""
    if text is None:
        return None
    if kind == "int":
        return int(text)
    if kind == "bool":
        return {"t": True, "f": False, "true": True, "false": False}[text]
    if kind == "digits" and nonfinite_as_null and text in NON_FINITE:
        return None
    return text


def describe_value(v, limit=120):
    r = repr(v)
    if len(r) > limit:
        r = r[:limit] + "...(%d chars)" % len(r)
    return r


def compare_row(got, texts, kinds, nonfinite_as_null=True, skip=()):
    """Mismatches between an event's after/before object and the source row: a list of
    strings, empty when every column matches exactly (value and JSON type)."""
    out = []
    if got is None:
        return ["row is null"]
    missing = [c for c in texts if c not in got and c not in skip]
    extra = [c for c in got if c not in texts]
    if missing:
        out.append("columns missing from the event: %s" % missing)
    if extra:
        out.append("columns in the event that the table does not have: %s" % extra)
    for col, text in texts.items():
        if col in skip or col not in got:
            continue
        kind = kinds[col][0]
        want = expected_value(text, kind, nonfinite_as_null)
        have = got[col]
        # Exact JSON type too: True == 1 in Python, and 5 != "5".
        if type(have) is not type(want) or have != want:
            out.append("%s (%s): source %s -> expected %s, event has %s" % (
                col, kinds[col][1], describe_value(text), describe_value(want),
                describe_value(have)))
    return out


def apply_events(events, key_cols=("id",), tables=None):
    """Rebuild {(schema.table, key tuple): after} from events in file order.

    Fails (AssertionError) on an overlap (`r`/`c` for a key already present) or a gap
    (`u`/`d` for a key not present), on an `r` after the stream started, and on a key
    whose update sent no after. Returns (state, counts) with counts per op."""
    gc.disable()  # many new dicts: the cyclic GC would dominate
    try:
        return _apply_events(events, key_cols, tables)
    finally:
        gc.enable()


def _apply_events(events, key_cols, tables):
    state = {}
    counts = {}
    streaming = False
    for i, e in enumerate(events):
        t = e.table
        if tables is not None and t not in tables:
            continue
        op = e["op"]
        counts[op] = counts.get(op, 0) + 1
        if op == "t":
            for k in [k for k in state if k[0] == t]:
                del state[k]
            continue
        if op == "r":
            assert not streaming, "snapshot row after streamed events at #%d: %s" % (i, e.raw[:300])
        else:
            streaming = True
        row = e["after"] if op in "rcu" else e["before"]
        k = (t, tuple(row[c] for c in key_cols))
        if op in "rc":
            assert k not in state, "overlap: %s for %r which already exists (#%d in %s): %s" % (
                op, k, i, e.segment, e.raw[:300])
            state[k] = dict(e["after"])
        elif op == "u":
            old = e["before"] or e["after"]
            ok = (t, tuple(old[c] for c in key_cols))
            assert ok in state, "gap: update of %r which the events never created (#%d): %s" % (
                ok, i, e.raw[:300])
            prev = state.pop(ok)
            new = dict(prev)
            new.update(e["after"])  # an absent (unchanged TOASTed) column keeps its value
            assert k not in state, "overlap: update moves %r onto an existing key" % (k,)
            state[k] = new
        elif op == "d":
            assert k in state, "gap: delete of %r which the events never created (#%d): %s" % (
                k, i, e.raw[:300])
            del state[k]
    return state, counts


def table_rows(cluster, table, key="id"):
    """{(table_label, (key,)): {col: python value}} from psycopg2 (ints stay ints)."""
    c = cluster.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SELECT * FROM %s" % table)
            cols = [d[0] for d in cur.description]
            return {r[cols.index(key)]: dict(zip(cols, r)) for r in cur.fetchall()}
    finally:
        c.close()


class SegmentWatcher:
    """Reads only what was appended to the segment files since the last call, so waiting
    for a marker in a large, growing snapshot segment stays cheap. A segment renamed from
    .jsonl.open to .jsonl is followed by its sequence number."""

    def __init__(self, d):
        self.d = d
        self.offsets = {}  # seq -> bytes read
        self.tail = b""
        self.found = set()

    def poll(self, needles):
        """Scan new bytes; returns the set of needles seen so far (ever)."""
        for seg in h.list_segments(self.d):
            off = self.offsets.get(seg.seq, 0)
            try:
                with open(seg.path, "rb") as f:
                    f.seek(off)
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self.offsets[seg.seq] = off + len(data)
            buf = self.tail + data
            for n in needles:
                if n in buf:
                    self.found.add(n)
            self.tail = data[-64:]
        return self.found

    def bytes(self):
        return sum(self.offsets.values())


def wait_snapshot_last(p, timeout=120, watcher=None):
    """Wait until the snapshot's last row (source.snapshot "last") is in the segments;
    fail at once if pgcdc exits without writing it."""
    w = watcher or SegmentWatcher(p.data_dir)
    needle = b'"snapshot":"last"'

    def cond():
        if needle in w.poll([needle]):
            return "done"
        return None if p.alive() else "exited"
    r = h.wait_until(cond, timeout, interval=0.05, what="the snapshot's last row")
    if r == "exited":
        raise AssertionError("pgcdc exited before its snapshot completed\n" + p.describe())


def finish(cluster, p, slot, timeout=60):
    """Wait until everything written so far is confirmed, then SIGTERM pgcdc (exit 0)."""
    end = cluster.current_lsn()
    cluster.wait_confirmed(slot, end, timeout=timeout)
    rc = p.stop(timeout=15)
    assert rc == 0, p.describe()
    return end


class Churn(threading.Thread):
    """Commits small transactions against `table` (id bigint PK, v bigint, note text):
    updates and deletes of random existing ids in [1, max_id] and inserts of new ids above
    `next_id`, until stopped. Rows the snapshot is reading change under it."""

    def __init__(self, cluster, table, max_id, next_id, seed=1, pause=0.0):
        super().__init__(daemon=True, name="churn-%s" % table)
        self.cluster = cluster
        self.table = table
        self.max_id = max_id
        self.next_id = next_id
        self.rng = random.Random(seed)
        self.pause = pause
        self.commits = 0
        self.failure = None
        self._halt = threading.Event()
        h._register(self)

    def run(self):
        try:
            conn = self.cluster.connect(autocommit=False)
            cur = conn.cursor()
            while not self._halt.is_set():
                for _ in range(self.rng.randint(1, 4)):
                    r = self.rng.random()
                    if r < 0.45:
                        cur.execute("UPDATE %s SET v = v + 1, note = %%s WHERE id = %%s" % self.table,
                                    ("u%d" % self.commits, self.rng.randint(1, self.max_id)))
                    elif r < 0.65:
                        cur.execute("DELETE FROM %s WHERE id = %%s" % self.table,
                                    (self.rng.randint(1, self.max_id),))
                    else:
                        self.next_id += 1
                        cur.execute("INSERT INTO %s (id, v, note) VALUES (%%s, 0, 'new')" % self.table,
                                    (self.next_id,))
                conn.commit()
                self.commits += 1
                if self.pause:
                    self._halt.wait(self.pause)
            conn.close()
        except Exception as e:  # reported by stop()
            self.failure = e

    def stop(self):
        self._halt.set()
        self.join(30)
        h._unregister(self)
        if self.failure is not None:
            raise AssertionError("churn writer failed: %r" % (self.failure,))

    def kill_now(self):
        self._halt.set()
        h._unregister(self)


def wal2json_keeps_nonfinite(cluster):
    """Whether the server's wal2json can send numeric/float NaN as a string (2.6+ with
    `numeric-data-types-as-string`; 2.5 rejects the option). Decodes a real NaN through a
    temporary slot: run it before any pgcdc slot exists (the probe table's changes would
    show up in their streams)."""
    t = "w2j_probe_%d" % os.getpid()
    c = cluster.connect()
    data = []
    try:
        with c.cursor() as cur:
            cur.execute("CREATE TABLE %s (n numeric)" % t)
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", (t,))
            cur.execute("INSERT INTO %s VALUES ('NaN')" % t)
            try:
                cur.execute("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, "
                            "'format-version', '2', 'numeric-data-types-as-string', '1')", (t,))
                data = [r[0] for r in cur.fetchall()]
            except psycopg2.Error:
                pass
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s", (t,))  # an error drops a temporary slot
            cur.execute("DROP TABLE %s" % t)
    finally:
        c.close()
    return any('"NaN"' in d for d in data)


_FAST_R = re.compile(
    rb'\{"before":null,"after":\{"id":(\d+),"v":(-?\d+),"note":"([^"\\]*)"\},"source":\{')
_FAST_SRC = re.compile(rb'"schema":"([^"\\]*)","table":"([^"\\]*)",')


def read_events_fast(d, tolerate_partial=False):
    """Like harness.read_events for big snapshots of (id bigint, v bigint, note text)
    tables: snapshot rows of that shape are picked apart with two small regexes (several
    times faster than json.loads); every other line is parsed as JSON. Returns
    harness.Event objects; for the fast ones .raw is the first 200 bytes of the line and
    source holds schema, table and snapshot only."""
    gc.disable()  # hundreds of thousands of new containers: the cyclic GC dominates otherwise
    try:
        return _read_events_fast(d, tolerate_partial)
    finally:
        gc.enable()


def _read_events_fast(d, tolerate_partial):
    out = []
    for seg in h.list_segments(d):
        with open(seg.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()
        assert not tail or tolerate_partial, "%s ends with a partial line" % seg.name
        name = seg.name
        for i, line in enumerate(lines):
            m = _FAST_R.match(line)
            s = _FAST_SRC.search(line, m.end()) if m else None
            if s and line.endswith(b'"op":"r",' + line[line.rfind(b'"ts_ms":'):]):
                snapflag = ("last" if b'"snapshot":"last"},"op":"r"' in line else
                            "true" if b'"snapshot":"true"},"op":"r"' in line else "?")
                e = h.Event(before=None,
                            after={"id": int(m.group(1)), "v": int(m.group(2)),
                                   "note": m.group(3).decode()},
                            source={"schema": s.group(1).decode(), "table": s.group(2).decode(),
                                    "snapshot": snapflag},
                            op="r")
                e.raw = line[:200].decode()
            else:
                try:
                    e = h.Event(h.load_event(line.decode("utf-8")))
                except ValueError as ex:
                    raise AssertionError("%s line %d is not JSON (%s): %r" % (
                        name, i + 1, ex, line[:300]))
                e.raw = line.decode("utf-8")
            e.segment = name
            out.append(e)
    return out


def check_segment_names(d):
    """harness.check_segment_files without parsing every line (for big snapshots): names,
    sequence order, one open segment and last, each closed one ending in a newline, each
    name's LSN = its first event's commit_lsn."""
    segs = h.list_segments(d)
    for s in segs:
        assert s.valid_name, "badly named segment %s" % s.name
    opens = [s for s in segs if s.open]
    assert len(opens) <= 1 and (not opens or segs[-1].open), segs
    for a, b in zip(segs, segs[1:]):
        assert b.seq > a.seq and b.first_commit_lsn >= a.first_commit_lsn, (a, b)
    for s in segs:
        with open(s.path, "rb") as f:
            first = f.readline()
            if not first:
                continue
            f.seek(-1, os.SEEK_END)
            assert f.read(1) == b"\n", "%s does not end with a newline" % s.name
        ev = h.load_event(first.decode())
        assert ev["source"]["commit_lsn"] == s.first_commit_lsn, (
            "%s starts with commit_lsn %s" % (s.name, h.lsn_format(ev["source"]["commit_lsn"])))
