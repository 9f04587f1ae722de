"""Operating pgcdc: `check` against servers that fail each check, `slot create|drop|status`,
metrics and /healthz through a PostgreSQL outage, secrets kept out of logs, metrics and
the process title, and the two slot accidents (dropped while running, held by another
process)."""

import json
import os
import re
import time
import uuid

import pytest

import harness as h
import ops_harness as oh

CORE_CHECKS = {"connect", "server_version", "wal_level", "wal2json", "replication_role", "slots",
               "wal_senders", "connections", "slot", "tables"}


def fix_sql(detail):
    """The SQL statement(s) after "fix:" in a check line, up to the end or a ';'-ended
    statement list; None when there is no runnable fix."""
    m = re.search(r"fix: ((?:(?:ALTER|SELECT|CREATE|GRANT)\b[^;]*;\s*)+)", detail)
    return m.group(1).strip() if m else None


def run_statements(cluster, sql):
    """Run ';'-separated statements one by one (ALTER SYSTEM refuses a multi-statement
    string, which runs as one transaction)."""
    for stmt in sql.split(";"):
        if stmt.strip():
            cluster.sql(stmt)


def fail_line(results, name, *needles):
    """The FAIL line of check `name`; it must contain every needle (case-insensitive)."""
    lines = oh.check_lines_of(results, "FAIL", name)
    assert lines, "no FAIL %s line in %r" % (name, results)
    detail = lines[0][2]
    for n in needles:
        assert re.search(n, detail, re.I), "FAIL %s does not say %r: %s" % (name, n, detail)
    return detail


# --------------------------------------------------------------------------------------
# check


def test_check_healthy_server_passes(cluster, make_pgcdc, name):
    cluster.sql("CREATE TABLE %s_t (id int PRIMARY KEY, v text)" % name)
    rc, res, p = oh.run_check(make_pgcdc, settings={"source.tables.include": "public.%s_t" % name})
    assert rc == 0, oh.describe_check(p)
    assert res and all(v == "PASS" for v, _, _ in res), oh.describe_check(p)
    assert CORE_CHECKS <= {n for _, n, _ in res}, oh.describe_check(p)
    connect = oh.check_lines_of(res, name="connect")[0][2]
    assert "127.0.0.1" in connect and "tls=off" in connect, connect
    assert "15." in oh.check_lines_of(res, name="server_version")[0][2]
    assert "does not exist" in oh.check_lines_of(res, name="slot")[0][2]
    assert cluster.slot(name) is None, "check must not create the slot"
    assert p.stderr().strip() == "" or not p.error_lines(), p.describe()


def test_check_warns_when_connections_leave_no_room_for_snapshot_workers(cluster, make_pgcdc):
    """snapshot.workers = 32 needs 34 plain sessions: the test cluster (max_connections 50,
    3 reserved) has them while idle, not while 20 other sessions are open."""
    workers = {"snapshot.workers": "32"}
    rc, res, p = oh.run_check(make_pgcdc, settings=workers, sub="roomy")
    assert oh.check_lines_of(res, "PASS", "connections"), oh.describe_check(p)
    held = [cluster.connect() for _ in range(20)]
    try:
        rc, res, p = oh.run_check(make_pgcdc, settings=workers, sub="crowded")
    finally:
        for conn in held:
            conn.close()
    warn = oh.check_lines_of(res, "WARN", "connections")
    assert warn and "snapshot.workers = 32" in warn[0][2], oh.describe_check(p)
    assert "max_connections" in warn[0][2], oh.describe_check(p)


def test_check_wal_level_replica(make_pgcdc):
    c = h.PgCluster("replica", settings={"wal_level": "replica"})
    try:
        c.start()
        rc, res, p = oh.run_check(make_pgcdc, cluster_=c)
        assert rc == 1, oh.describe_check(p)
        detail = fail_line(res, "wal_level", "replica", r"wal_level\s*=\s*'?logical")
        # The fix it prints works: run it, restart, check again.
        sql = fix_sql(detail)
        assert sql and "wal_level" in sql, detail
        run_statements(c, sql)
        c.restart()
        rc, res, p = oh.run_check(make_pgcdc, cluster_=c, sub="fixed")
        assert oh.check_lines_of(res, "PASS", "wal_level"), oh.describe_check(p)
    finally:
        c.kill_now()


def test_check_role_without_replication(cluster, make_pgcdc, name):
    role = "norepl_%s" % uuid.uuid4().hex[:6]
    cluster.sql("CREATE ROLE %s LOGIN PASSWORD 'x'" % role)
    rc, res, p = oh.run_check(make_pgcdc, settings={"source.dsn": cluster.dsn(user=role)})
    assert rc == 1, oh.describe_check(p)
    fail_line(res, "replication_role", "ALTER ROLE", "REPLICATION")
    assert oh.check_lines_of(res, "PASS", "wal_level"), "the other checks still run: %r" % res


def test_check_wal2json_not_loadable(cluster, make_pgcdc):
    cluster.sql("ALTER SYSTEM SET dynamic_library_path = '/nonexistent'")
    cluster.sql("SELECT pg_reload_conf()")
    try:
        time.sleep(0.3)
        rc, res, p = oh.run_check(make_pgcdc, sub="nolib")
        assert rc == 1, oh.describe_check(p)
        fail_line(res, "wal2json", "wal2json")
    finally:
        cluster.sql("ALTER SYSTEM RESET dynamic_library_path")
        cluster.sql("SELECT pg_reload_conf()")
    if not cluster.has_output_plugin_libraries:
        return
    # Newer minor releases also refuse plugins missing from output_plugin_libraries.
    cluster.sql("ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding")
    cluster.sql("SELECT pg_reload_conf()")
    try:
        time.sleep(0.3)
        rc, res, p = oh.run_check(make_pgcdc, sub="notallowed")
        assert rc == 1, oh.describe_check(p)
        detail = fail_line(res, "wal2json", "output_plugin_libraries", "ALTER SYSTEM")
        sql = fix_sql(detail)
        assert sql, detail
        run_statements(cluster, sql)
        time.sleep(0.3)
        rc, res, p = oh.run_check(make_pgcdc, sub="fixed")
        assert rc == 0 and oh.check_lines_of(res, "PASS", "replication_role"), (
            "the printed fix did not work: %s\n%s" % (sql, oh.describe_check(p)))
    finally:
        cluster.sql("ALTER SYSTEM RESET output_plugin_libraries")
        cluster.sql("SELECT pg_reload_conf()")
    time.sleep(0.3)
    rc, res, p = oh.run_check(make_pgcdc, sub="restored")
    assert oh.check_lines_of(res, "PASS", "wal2json"), oh.describe_check(p)


def test_check_keyless_warns_and_missing_table_fails(cluster, make_pgcdc, name):
    cluster.sql("CREATE TABLE %s_keyless (a int, b text)" % name)
    include = "public.%s_keyless, public.%s_nope" % (name, name)
    rc, res, p = oh.run_check(make_pgcdc, settings={"source.tables.include": include})
    assert rc == 1, oh.describe_check(p)
    fail_line(res, "tables", "public.%s_nope" % name)
    warns = [d for v, n, d in res if v == "WARN" and "public.%s_keyless" % name in d]
    assert warns, "no WARN naming the keyless table: %r" % res
    assert re.search(r"REPLICA IDENTITY FULL", warns[0]) and re.search(r"primary key", warns[0], re.I)
    sql = re.search(r"(ALTER TABLE \S+ REPLICA IDENTITY FULL)", warns[0]).group(1)

    # Alone, the keyless table is a warning, not a failure.
    rc, res, p = oh.run_check(make_pgcdc, settings={
        "source.tables.include": "public.%s_keyless" % name}, sub="warnonly")
    assert rc == 0, oh.describe_check(p)
    assert any(v == "WARN" for v, _, _ in res)

    # The printed fix works.
    cluster.sql(sql)
    rc, res, p = oh.run_check(make_pgcdc, settings={
        "source.tables.include": "public.%s_keyless" % name}, sub="fixed")
    assert rc == 0 and not any(v == "WARN" for v, _, _ in res), oh.describe_check(p)


def test_check_pooler_host_is_a_config_error(make_pgcdc):
    secret = "pooler-Secret-%s" % uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    rc, res, p = oh.run_check(make_pgcdc, opts={
        "source.dsn": "postgres://u:%s@ep-cool-pooler.us-east-2.aws.neon.tech/db" % secret})
    assert rc == 2, oh.describe_check(p)
    assert time.monotonic() - t0 < 5, "a pooler host must be refused without connecting"
    err = [l for l in p.lines if l.strip()]
    assert len(err) == 1 and "-pooler" in err[0], p.describe()
    assert secret not in p.stderr() + p.stdout()


def test_check_unreachable_fails_at_once(make_pgcdc, name):
    port = h.free_port()
    t0 = time.monotonic()
    rc, res, p = oh.run_check(make_pgcdc, settings={
        "source.dsn": "host=127.0.0.1 port=%d dbname=x user=postgres" % port})
    assert rc == 1, oh.describe_check(p)
    assert time.monotonic() - t0 < 10, "check must not retry"
    fail_line(res, "connect", str(port))


# --------------------------------------------------------------------------------------
# slot create | status | drop


def test_slot_commands_round_trip(cluster, make_pgcdc, name):
    rc, st, p = oh.slot_status(make_pgcdc)
    assert rc == 0 and st.get("slot") == name and st.get("exists") == "false", oh.describe_check(p)

    for _ in range(2):  # create twice: the second finds it and is still fine
        rc, p = oh.slot_cmd(make_pgcdc, "create")
        assert rc == 0, oh.describe_check(p)
    srv = cluster.slot(name)
    assert srv and srv["plugin"] == "wal2json" and not srv["active"]

    rc, st, p = oh.slot_status(make_pgcdc)
    assert rc == 0, oh.describe_check(p)
    assert st["exists"] == "true" and st["plugin"] == "wal2json", st
    assert st["active"] == "false" and st["active_pid"] == "0", st
    assert h.lsn_parse(st["confirmed_flush_lsn"]) == srv["confirmed_flush_lsn"], (st, srv)
    assert st["wal_status"] in ("reserved", "extended"), st
    behind0 = int(st["behind_bytes"])
    retained0 = int(st["retained_wal_bytes"])
    assert behind0 >= 0 and retained0 >= 0

    # Writes while nobody streams: the slot falls behind by about what was written.
    cluster.sql("CREATE TABLE %s_w (id int PRIMARY KEY, v text)" % name)
    cluster.sql("INSERT INTO %s_w SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g" % name)
    rc, st, p = oh.slot_status(make_pgcdc)
    behind1 = int(st["behind_bytes"])
    expect = cluster.current_lsn() - srv["confirmed_flush_lsn"]
    assert behind1 > behind0 + 200_000, (behind0, behind1)
    assert abs(behind1 - expect) < 64 * 1024, (behind1, expect)
    assert int(st["retained_wal_bytes"]) >= behind1 - 64 * 1024, st

    # Held by another process: status shows it, drop refuses naming the pid.
    rl = oh.RecvLogical(cluster, name).start()
    try:
        pid = rl.wait_active()
        rc, st, p = oh.slot_status(make_pgcdc)
        assert st["active"] == "true" and st["active_pid"] == str(pid), st
        rc, p = oh.slot_cmd(make_pgcdc, "drop")
        assert rc == 1, oh.describe_check(p)
        assert str(pid) in p.stderr() + p.stdout(), oh.describe_check(p)
        assert cluster.slot(name) is not None
    finally:
        rl.stop()
    cluster.wait_slot_active(name, active=False)

    rc, p = oh.slot_cmd(make_pgcdc, "drop")
    assert rc == 0, oh.describe_check(p)
    assert cluster.slot(name) is None
    rc, st, p = oh.slot_status(make_pgcdc)
    assert rc == 0 and st["exists"] == "false", st


# --------------------------------------------------------------------------------------
# The slot's accidents


def test_slot_busy_gives_up_naming_the_pid(cluster, make_pgcdc, name):
    rc, p = oh.slot_cmd(make_pgcdc, "create")
    assert rc == 0, oh.describe_check(p)
    rl = oh.RecvLogical(cluster, name).start()
    try:
        pid = rl.wait_active()
        w = make_pgcdc(settings={"source.slot_busy_timeout_ms": "3000"}, sub="busy")
        t0 = time.monotonic()
        w.start()
        rc = w.wait(45)
        took = time.monotonic() - t0
        assert rc == 1, w.describe()
        assert took >= 2.5, "gave up after %.1fs: it must retry for the bounded wait" % took
        errs = w.error_lines()
        assert errs and str(pid) in errs[-1] and name in errs[-1], w.describe()
        assert cluster.slot(name)["active_pid"] == pid, "pgcdc must leave the holder alone"
    finally:
        rl.stop()
        cluster.drop_slot(name)


def test_slot_dropped_while_running(cluster, make_pgcdc, name):
    cluster.sql("CREATE TABLE %s_t (id int PRIMARY KEY)" % name)
    w = make_pgcdc(settings={"source.tables.include": "public.%s_t" % name})
    w.start()
    cluster.wait_slot_active(name)
    cluster.sql("INSERT INTO %s_t SELECT generate_series(1, 10)" % name)
    cluster.wait_confirmed(name, cluster.current_lsn())

    # Kill its walsender and drop the slot before pgcdc reconnects (its first backoff).
    def dropped():
        oh.terminate_walsender(cluster, name)
        try:
            cluster.sql("SELECT pg_drop_replication_slot(%s)", (name,), dbname="postgres")
        except Exception:
            return False  # still active: try again
        return True
    h.wait_until(dropped, 20, interval=0.01, what="dropping slot %s under pgcdc" % name)

    rc = w.wait(60)
    assert rc == 1, w.describe()
    errs = w.error_lines()
    assert errs, w.describe()
    assert name in errs[-1] and re.search(r"snapshot", errs[-1], re.I), (
        "the error must name the slot and how to recover: %s" % errs[-1])
    assert cluster.slot(name) is None, "pgcdc must not quietly recreate a dropped slot"


# --------------------------------------------------------------------------------------
# metrics and /healthz


METRICS = ["pgcdc_events_total", "pgcdc_bytes_total", "pgcdc_confirmed_lsn",
           "pgcdc_server_wal_end_lsn", "pgcdc_lag_bytes", "pgcdc_lag_seconds",
           "pgcdc_reconnects_total", "pgcdc_sink_errors_total", "pgcdc_inflight_transactions",
           "pgcdc_snapshot_rows_total", "pgcdc_connected"]


def test_metrics_and_healthz_through_an_outage(make_pgcdc, name):
    # Its own cluster: this test stops PostgreSQL.
    c = h.PgCluster("metrics")
    try:
        c.start()
        _metrics_and_healthz(c, make_pgcdc, name)
    finally:
        c.kill_now()


def _metrics_and_healthz(c, make_pgcdc, name):
    t = "%s_t" % name
    c.sql("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
    c.sql("INSERT INTO %s SELECT g, 'pre' FROM generate_series(1, 5) g" % t)
    ep = oh.new_metrics_endpoint()
    w = make_pgcdc(cluster_=c, settings={"metrics.listen": ep.listen, "snapshot.mode": "initial",
                                         "source.tables.include": "public.%s" % t})
    w.start()
    ep.wait_health(200, 30, proc=w)
    # /healthz turns 200 once the slot exists, before the snapshot's rows are read: on a
    # loaded machine the counters below may still be on their way.
    h.wait_until(lambda: ep.scrape().get("pgcdc_snapshot_rows_total") == 5, 30,
                 what="the snapshot's 5 rows counted")
    status, body, headers = ep.raw()
    assert status == 200 and headers.get("Content-Type", "").startswith("text/plain"), headers
    m = oh.Metrics(body)
    missing = [n for n in METRICS if n not in m.names()]
    assert not missing, "metrics missing: %s\n%s" % (missing, body)
    for n in METRICS:
        assert m.types.get(n) in ("counter", "gauge"), "no # TYPE for %s" % n
    assert body.count("# TYPE pgcdc_events_total ") == 1
    assert m.get("pgcdc_connected") == 1
    assert m.get("pgcdc_snapshot_rows_total") == 5 and m.get("pgcdc_events_total", op="r") == 5

    # Writes move the counters.
    lsn0 = m.get("pgcdc_confirmed_lsn")
    bytes0 = m.get("pgcdc_bytes_total")
    c.sql("INSERT INTO %s SELECT g, 'x' FROM generate_series(100, 299) g" % t)
    c.sql("UPDATE %s SET v = 'y' WHERE id BETWEEN 100 AND 149" % t)
    c.sql("DELETE FROM %s WHERE id >= 290" % t)
    c.sql("TRUNCATE %s" % t)
    end = c.current_lsn()
    m = ep.wait_metric(lambda m: m.get("pgcdc_events_total", op="t") >= 1, 30,
                       what="the truncate to be counted", proc=w)
    assert m.get("pgcdc_events_total", op="c") == 200
    assert m.get("pgcdc_events_total", op="u") == 50
    assert m.get("pgcdc_events_total", op="d") == 10
    assert m.get("pgcdc_bytes_total") > bytes0 + 200 * 100
    assert m.get("pgcdc_sink_errors_total") == 0

    # Writes stopped: the worker catches up and the lag goes to ~0.
    m = ep.wait_metric(lambda m: m.get("pgcdc_confirmed_lsn") >= end, 30,
                       what="confirmed_lsn to reach %s" % h.lsn_format(end), proc=w)
    assert m.get("pgcdc_confirmed_lsn") > lsn0
    m = ep.wait_metric(lambda m: m.get("pgcdc_lag_bytes") <= 16 * 1024, 30,
                       what="lag_bytes to drop to ~0", proc=w)
    assert m.get("pgcdc_lag_seconds") < 5, m.text
    ep.wait_metric(lambda m: m.get("pgcdc_inflight_transactions") == 0, 10,
                   what="no transaction in flight once caught up", proc=w)
    c.wait_confirmed(w.settings["source.slot"], end)

    # PostgreSQL goes away: 503; it comes back: 200 again, one more reconnect.
    reconnects = m.get("pgcdc_reconnects_total")
    c.stop(mode="fast")
    ep.wait_health(503, 30, proc=w)
    assert ep.scrape().get("pgcdc_connected") == 0
    c.start()
    ep.wait_health(200, 60, proc=w)
    m = ep.scrape()
    assert m.get("pgcdc_connected") == 1
    assert m.get("pgcdc_reconnects_total") >= reconnects + 1
    c.sql("INSERT INTO %s VALUES (1000, 'after')" % t)
    ep.wait_metric(lambda m: m.get("pgcdc_events_total", op="c") == 201, 30,
                   what="an insert after the restart", proc=w)
    assert w.stop(timeout=15) == 0, w.describe()


# --------------------------------------------------------------------------------------
# Secrets


def test_password_never_leaks(make_pgcdc, name):
    """A role with a scram password, given three ways (URI in -o, key=value in
    PGCDC_SOURCE_DSN, ${ENV} in the config file), debug logs, a PostgreSQL restart, then
    the password changes under the running workers so that reconnecting fails: the
    password is in no log line, metric, check/slot output or /proc/PID/cmdline."""
    pw = "Pw-%s-Secret" % uuid.uuid4().hex[:10]
    superpw = "Su-%s-Secret" % uuid.uuid4().hex[:10]
    c = h.PgCluster("scram", host_auth="scram-sha-256", password=superpw)
    try:
        c.start()
        _password_never_leaks(c, make_pgcdc, name, pw, superpw)
    finally:
        c.kill_now()


def _password_never_leaks(c, make_pgcdc, name, pw, superpw):
    role = "cdc_%s" % uuid.uuid4().hex[:6]
    c.sql("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'" % (role, pw))
    c.sql("GRANT pg_read_all_data TO %s" % role)
    uri = "postgresql://%s:%s@127.0.0.1:%d/%s" % (role, pw, c.port, c.dbname)
    kv = c.dsn(user=role, password=pw)
    kv_env_ref = c.dsn(user=role, password="${PGCDC_IT_SECRET}")
    secrets = (pw, superpw)

    def leaks(text):
        return [s for s in secrets if s in text]

    base = {"log.level": "debug", "status.interval_ms": "200"}
    ways = {
        "uri_opt": dict(settings=dict(base, **{"source.dsn": None}), opts={"source.dsn": uri}),
        "kv_env": dict(settings=dict(base, **{"source.dsn": None, "log.format": "json"}),
                       env={"PGCDC_SOURCE_DSN": kv}),
        "env_ref": dict(settings=dict(base, **{"source.dsn": kv_env_ref}),
                        env={"PGCDC_IT_SECRET": pw}),
    }
    for kw in ways.values():
        kw["cluster_"] = c
    workers = {}
    for i, (way, kw) in enumerate(ways.items()):
        ep = oh.new_metrics_endpoint()
        kw["settings"]["metrics.listen"] = ep.listen
        kw["settings"]["source.slot"] = "%s_%d" % (name[:40], i)
        workers[way] = (make_pgcdc(sub=way, **kw), ep)
        # check and slot status with the same secret
        for args in (["check"], ["slot", "status"]):
            p = make_pgcdc(sub=way + "_" + args[0], args=args, **kw)
            p.run(timeout=30)
            out = p.stdout() + p.stderr()
            assert not leaks(out), "%s %s printed the password:\n%s" % (way, args, out)
            if args == ["check"]:
                assert p.returncode in (0, 1), oh.describe_check(p)
    for way, (w, ep) in workers.items():
        w.start()
    for way, (w, ep) in workers.items():
        ep.wait_health(200, 30, proc=w)
        cmdline = oh.proc_cmdline(w.pid).decode(errors="replace")
        assert cmdline and not leaks(cmdline), "%s: /proc/PID/cmdline shows the password: %r" % (
            way, cmdline)

    c.sql("CREATE TABLE %s_t (id int PRIMARY KEY)" % name)
    c.sql("INSERT INTO %s_t VALUES (1), (2)" % name)
    c.restart(mode="fast")
    scrapes = []
    for way, (w, ep) in workers.items():
        ep.wait_health(200, 60, proc=w)
        st, body, _ = ep.raw()
        scrapes.append(body)
        assert oh.Metrics(body).get("pgcdc_reconnects_total") >= 1

    # A wrong password from now on: the next connection attempt fails authentication.
    c.sql("ALTER ROLE %s PASSWORD 'Changed-%s'" % (role, uuid.uuid4().hex[:8]))
    for way, (w, ep) in workers.items():
        oh.terminate_walsender(c, w.settings["source.slot"])
    for way, (w, ep) in workers.items():
        rc = w.wait(60)
        assert rc == 1, "%s: a wrong password must stop pgcdc with exit 1\n%s" % (way, w.describe())
        assert any(re.search(r"password|authentication", l, re.I) for l in w.error_lines()), (
            w.describe())

    for way, (w, ep) in workers.items():
        text = w.stderr() + "\n" + w.stdout()
        assert not leaks(text), "%s: the password is in the output:\n%s" % (way, text)
        assert len(w.lines) > 5, "debug logging produced almost nothing: %s" % w.describe()
        for line in w.lines:
            if way == "kv_env":
                try:
                    rec = json.loads(line)
                except ValueError:
                    raise AssertionError("%s: a stderr line is not a JSON log record: %r\n%s" % (
                        way, line, w.describe()))
                assert {"ts", "level", "msg"} <= set(rec), line
            else:
                assert re.match(r"^ts=\S+ level=(error|warn|info|debug) msg=", line), line
    for body in scrapes:
        assert not leaks(body)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_cmdline_scrubbed_for_key_value_dsn(cluster, make_pgcdc, name):
    """-o source.dsn='host=... password=...' (key=value form on the command line)."""
    pw = "Kv-%s-Secret" % uuid.uuid4().hex[:10]
    w = make_pgcdc(opts={"source.dsn": cluster.dsn(password=pw)}, sub="kvopt")
    w.start()
    cluster.wait_slot_active(name)
    cmdline = oh.proc_cmdline(w.pid)
    assert cmdline and pw.encode() not in cmdline, cmdline
    assert w.stop(timeout=15) == 0, w.describe()
    assert pw not in w.stderr()
