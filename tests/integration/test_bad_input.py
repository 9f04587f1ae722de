"""Bad input gets one clear error line, the right exit code, and never a password."""

import os
import shutil
import time

import pytest

import harness as h

PASSWORD = "Sup3r-Secret-pw-8842"
WRONG = "Wr0ng-Secret-pw-1177"


@pytest.fixture(scope="module")
def scram_cluster():
    """Host connections need a scram-sha-256 password (the postgres user's is PASSWORD)."""
    c = h.PgCluster("scram", host_auth="scram-sha-256", password=PASSWORD)
    try:
        c.start()
        yield c
    finally:
        c.kill_now()


@pytest.fixture
def make_pgcdc(make_pgcdc, cluster):
    """conftest's make_pgcdc, but the DSN carries a password (trust auth ignores it) so that
    every case also checks it is never echoed."""

    def make(settings=None, cluster_=None, **kw):
        s = {"source.dsn": (cluster_ or cluster).dsn(password=PASSWORD)}
        s.update(settings or {})
        return make_pgcdc(settings=s, cluster_=cluster_, **kw)

    return make


def assert_one_error(p, *needles, secrets=(PASSWORD, WRONG)):
    """Exactly one level=error line; it names every needle; no secret anywhere."""
    errs = p.error_lines()
    assert len(errs) == 1, "want exactly one level=error line, got %d\n%s" % (len(errs), p.describe())
    low = errs[0].lower()
    for n in needles:
        assert n.lower() in low, "error line does not name %r: %s" % (n, errs[0])
    assert_no_secret(p, secrets)
    return errs[0]


def assert_no_secret(p, secrets=(PASSWORD, WRONG)):
    out = p.stderr() + "\n" + p.stdout()
    for s in secrets:
        assert s not in out, "secret %r leaked:\n%s" % (s, p.describe())


def run_fail(p, timeout=15, args=()):
    t = time.monotonic()
    rc = p.run(list(args), timeout=timeout)
    return rc, time.monotonic() - t


# --- configuration ----------------------------------------------------------------------


def test_unknown_key_in_file(make_pgcdc):
    p = make_pgcdc(settings={"source.bogus_key": "1"})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, "source.bogus_key")


def test_unknown_key_in_option(make_pgcdc):
    p = make_pgcdc(opts={"sink.fle.dir": "/tmp/x"})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, "sink.fle.dir")


@pytest.mark.parametrize("key,value", [
    ("status.interval_ms", "abc"),
    ("snapshot.mode", "sometimes"),
    ("sink.type", "nats"),
    ("sink.file.segment_bytes", "-5"),
    ("source.create_slot", "maybe"),
])
def test_bad_value(make_pgcdc, key, value):
    p = make_pgcdc(settings={key: value})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, key)


def test_bad_value_from_environment(make_pgcdc):
    p = make_pgcdc(env={"PGCDC_LOG_LEVEL": "loud"})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, "log.level")


def test_missing_dsn(make_pgcdc):
    p = make_pgcdc(settings={"source.dsn": None})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, "source.dsn")


def test_bad_end_lsn(make_pgcdc):
    p = make_pgcdc()
    rc, _ = run_fail(p, args=["--end-lsn", "not-an-lsn"])
    assert rc == 2, p.describe()
    assert_one_error(p, "end-lsn")


# --- file sink and state ----------------------------------------------------------------


def test_sink_dir_under_a_regular_file(make_pgcdc, workdir):
    blocker = os.path.join(workdir, "a-file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    bad = os.path.join(blocker, "data")
    p = make_pgcdc(settings={"sink.file.dir": bad})
    rc, took = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, bad)


def test_sink_dir_not_writable(make_pgcdc, workdir):
    """A directory the worker's user may not write (as root, run pgcdc as `nobody`)."""
    user = None
    if h.is_root():
        user = "nobody"
        if shutil.which("runuser") is None:
            pytest.skip("runuser not available")
    base = os.path.join(workdir, "nb")
    os.makedirs(base)
    state = os.path.join(base, "state")
    os.makedirs(state)
    ro = os.path.join(base, "readonly")
    os.makedirs(ro)
    if user:
        shutil.chown(base, user=user)
        shutil.chown(state, user=user)
    os.chmod(ro, 0o555)
    # A copy of the binary the user can reach (the build dir may be under /root).
    binary = h.pgcdc_bin()
    if user:
        binary = os.path.join(base, "pgcdc")
        shutil.copy(h.pgcdc_bin(), binary)
        os.chmod(binary, 0o755)
    try:
        p = make_pgcdc(settings={"sink.file.dir": ro, "state.dir": state}, user=user, sub="nb/p",
                       binary=binary)
        if user:
            shutil.chown(p.workdir, user=user)
        rc, _ = run_fail(p)
    finally:
        os.chmod(ro, 0o755)
    assert rc == 2, p.describe()
    assert_one_error(p, ro)


def test_second_run_on_same_state_dir(cluster, make_pgcdc, name):
    table = name + "_t"
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY)" % table)
    first = make_pgcdc()
    first.start()
    cluster.wait_slot_active(name, timeout=30)
    # Same state.dir, a different slot so the slot is not what stops it.
    second = make_pgcdc(settings={"state.dir": first.state_dir, "source.slot": name + "_2",
                                  "sink.file.dir": os.path.join(first.workdir, "data2")}, sub="p2")
    rc, took = run_fail(second, timeout=10)
    assert rc != 0 and took < 5, "second run: exit %s after %.1fs\n%s" % (rc, took, second.describe())
    line = assert_one_error(second, first.state_dir)
    assert "lock" in line.lower() or "running" in line.lower() or "use" in line.lower(), line
    # The first keeps running and streaming.
    first.assert_alive("after the second run tried the same state.dir")
    cluster.sql("INSERT INTO %s VALUES (42)" % table)
    h.wait_until(lambda: [e for e in first.events(tolerate_partial=True)
                          if e["source"]["table"] == table], 15, what="the first to stream")
    assert first.stop(timeout=10) == 0, first.describe()
    assert cluster.slot(name + "_2") is None, "the second run created its slot"
    cluster.drop_slot(name)


# --- server side ------------------------------------------------------------------------


def _auth_failures(c):
    return c.log_text().count("password authentication failed")


@pytest.mark.parametrize("form", ["keyvalue", "uri", "env"])
def test_wrong_password(scram_cluster, make_pgcdc, name, form):
    c = scram_cluster
    env = None
    if form == "keyvalue":
        dsn = c.dsn(password=WRONG)
    elif form == "uri":
        dsn = c.uri(password=WRONG)
    else:  # ${NAME} expansion in the config file
        dsn = c.dsn(password="${IT_DB_PASSWORD}")
        env = {"IT_DB_PASSWORD": WRONG}
    before = _auth_failures(c)
    p = make_pgcdc(settings={"source.dsn": dsn}, cluster_=c, env=env)
    rc, took = run_fail(p, timeout=15)
    assert rc == 1 and took < 5, "exit %s after %.1fs\n%s" % (rc, took, p.describe())
    assert_one_error(p, "password")
    time.sleep(0.5)
    n = _auth_failures(c) - before
    assert 1 <= n <= 2, "%d failed authentications: a retry loop?\n%s" % (n, c.log_tail())
    assert c.slot(name) is None


def test_right_password_never_logged(scram_cluster, make_pgcdc, name):
    c = scram_cluster
    p = make_pgcdc(settings={"source.dsn": c.uri(), "log.level": "debug"}, cluster_=c)
    rc = p.run(["--end-lsn", h.lsn_format(c.current_lsn())], timeout=30)
    assert rc == 0, p.describe()
    assert not p.error_lines(), p.describe()
    assert_no_secret(p)
    assert c.slot(name) is not None
    c.drop_slot(name)


def test_wal2json_not_installed(cluster, make_pgcdc, name):
    cluster.sql("ALTER SYSTEM SET dynamic_library_path = '/nonexistent'")
    cluster.sql("SELECT pg_reload_conf()")
    try:
        h.wait_until(lambda: cluster.scalar("SHOW dynamic_library_path") == "/nonexistent", 10)
        p = make_pgcdc()
        rc, took = run_fail(p, timeout=20)
        assert rc == 1, "exit %s after %.1fs\n%s" % (rc, took, p.describe())
        assert_one_error(p, "wal2json")
    finally:
        cluster.sql("ALTER SYSTEM RESET dynamic_library_path")
        cluster.sql("SELECT pg_reload_conf()")
        h.wait_until(lambda: cluster.scalar("SHOW dynamic_library_path") == "$libdir", 10)
    cluster.drop_slot(name)


def test_wal2json_not_allowed(cluster, make_pgcdc, name):
    """Servers with output_plugin_libraries (newer minor releases) must list wal2json."""
    if not cluster.has_output_plugin_libraries:
        pytest.skip("this PostgreSQL has no output_plugin_libraries setting")
    cluster.sql("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'")
    cluster.sql("SELECT pg_reload_conf()")
    try:
        h.wait_until(lambda: cluster.scalar("SHOW output_plugin_libraries") == "pgoutput", 10)
        p = make_pgcdc()
        rc, took = run_fail(p, timeout=20)
        assert rc == 1, "exit %s after %.1fs\n%s" % (rc, took, p.describe())
        assert_one_error(p, "output_plugin_libraries", "wal2json")
    finally:
        cluster.sql("ALTER SYSTEM RESET output_plugin_libraries")
        cluster.sql("SELECT pg_reload_conf()")
    cluster.drop_slot(name)


def test_wal_level_not_logical(make_pgcdc, name):
    c = h.PgCluster("replica", settings={"wal_level": "replica"})
    try:
        c.start()
        p = make_pgcdc(cluster_=c)
        rc, took = run_fail(p, timeout=20)
        assert rc == 1, "exit %s after %.1fs\n%s" % (rc, took, p.describe())
        line = assert_one_error(p, "wal_level", "logical")
        assert "restart" in line.lower() or "set" in line.lower(), "no fix given: " + line
    finally:
        c.kill_now()


def test_server_unreachable_retries(make_pgcdc):
    port = h.free_port()  # nothing listens there
    p = make_pgcdc(settings={"source.dsn": "host=127.0.0.1 port=%d dbname=x user=postgres "
                                           "password=%s" % (port, PASSWORD)})
    p.start()
    time.sleep(8)
    p.assert_alive("while the server is unreachable")
    retries = p.lines_at("warn", "error")
    assert 2 <= len(retries) <= 12, "want a few retries with backoff in 8s, got %d\n%s" % (
        len(retries), p.describe())
    assert not p.error_lines(), "a transient failure is not an error:\n" + p.describe()
    assert_no_secret(p)
    t = time.monotonic()
    rc = p.stop(timeout=10)
    assert rc == 0, "SIGTERM while backing off: exit %s after %.1fs\n%s" % (
        rc, time.monotonic() - t, p.describe())


@pytest.mark.parametrize("dsn", [
    "postgresql://app:50%off@127.0.0.1/db",   # libpq: invalid percent-encoded token "50%off"
    "host=127.0.0.1 password:hunter2off",      # libpq: missing "=" after "password:hunter2off"
])
def test_unparseable_dsn_never_echoes_it(make_pgcdc, dsn):
    """libpq's own parse error quotes the fragment it could not read, which can be the
    password; pgcdc must refuse the DSN (exit 2, no retry loop) without quoting it."""
    p = make_pgcdc(opts={"source.dsn": dsn})
    rc, _ = run_fail(p)
    assert rc == 2, p.describe()
    assert_one_error(p, "source.dsn", "cannot be parsed", secrets=("50%off", "hunter2off"))
