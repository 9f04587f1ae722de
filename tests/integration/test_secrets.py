"""No piece of a password reaches a log line or check's output: a DSN with an unencoded
'@' in its password makes libpq quote the password's tail as a host name, and a misspelt
option echoes its value. Covers run, check, slot status, replay --target, verify and
misspelt options of run and replay."""

import os

import harness as h

TAIL = "S3cr3tTail"  # what libpq takes for the start of the host name


def _bad_dsn(cluster):
    # Unencoded '@': libpq reads user "u", password "pw" and host "S3cr3tTail@127.0.0.1".
    return "postgres://u:pw@%s@127.0.0.1:%d/%s" % (TAIL, cluster.port, cluster.dbname)


def _assert_clean(p, secrets=(TAIL, "pw@")):
    text = p.stderr() + "\n" + p.stdout()
    for s in secrets:
        assert s not in text, "%r shown:\n%s" % (s, p.describe())
    # The message itself is still there, with the piece masked.
    assert "****@127.0.0.1" in text or "****" in text, p.describe()


def test_password_pieces_never_shown(cluster, make_pgcdc, workdir):
    dsn = _bad_dsn(cluster)

    # run retries a host it cannot resolve: its warning is masked.
    p = make_pgcdc(settings={"source.dsn": dsn}, sub="run")
    p.start()
    line = p.wait_log(r"could not translate host name", timeout=30)
    assert '\\"****@127.0.0.1\\"' in line, line
    p.stop()
    _assert_clean(p)

    c = make_pgcdc(settings={"source.dsn": dsn}, args=["check"], sub="check")
    assert c.run(timeout=30) == 1, c.describe()
    assert any(l.startswith("FAIL connect:") and "****@127.0.0.1" in l
               for l in c.stdout_lines), c.describe()
    _assert_clean(c)

    s = make_pgcdc(settings={"source.dsn": dsn}, args=["slot", "status"], sub="status")
    assert s.run(timeout=30) == 1, s.describe()
    _assert_clean(s)

    indir = os.path.join(workdir, "in")
    os.makedirs(indir)
    for args in (["replay", "--input", indir, "--target", dsn],
                 ["verify", "--source", cluster.dsn(), "--target", dsn]):
        t = h.Pgcdc(os.path.join(workdir, args[0]), args=args, config=False)
        assert t.run(timeout=30) == 1, t.describe()
        assert "could not translate host name" in t.stderr(), t.describe()
        _assert_clean(t)


def test_misspelt_option_value_never_shown(workdir):
    for args in (["replay", "--targt=postgres://u:Secret99@h/db", "--input", workdir],
                 ["run", "--sourc=postgres://u:Secret99@h/db"]):
        t = h.Pgcdc(os.path.join(workdir, args[0]), args=args, config=False)
        assert t.run(timeout=30) == 2, t.describe()
        assert len(t.error_lines()) == 1 and "--help" in t.error_lines()[0], t.describe()
        _assert_clean(t, secrets=("Secret99",))
