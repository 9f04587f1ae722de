"""pytest fixtures over harness.py. See tests/README.md."""

import os
import re
import shutil
import sys
import tempfile
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    # Whatever a test left running (it failed half-way), kill it.
    harness.cleanup_all()


@pytest.fixture(scope="session")
def pgcdc_bin():
    try:
        return harness.pgcdc_bin()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def cluster():
    """One PostgreSQL 15 + wal2json cluster per test file (wal_level=logical, trust auth)."""
    c = harness.PgCluster("main")
    try:
        c.start()
        yield c
    finally:
        c.kill_now()


@pytest.fixture
def name(request):
    """A short unique identifier for this test: use it for slot, table and dir names."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    return "%s_%s" % (base, uuid.uuid4().hex[:6])


@pytest.fixture
def workdir(name):
    d = tempfile.mkdtemp(prefix="pgcdc-it-run-")
    os.chmod(d, 0o755)
    yield d
    if not os.environ.get("PGCDC_IT_KEEP"):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print("kept", d)


@pytest.fixture
def make_pgcdc(cluster, workdir, name, pgcdc_bin):
    """Factory: make_pgcdc(settings=None, opts=None, sub="w0", **kw) -> harness.Pgcdc.

    Defaults: source.dsn = the module cluster over TCP, source.slot = this test's name,
    files under workdir/<sub>. Every process it made is killed at teardown."""
    made = []

    def make(settings=None, opts=None, sub="p", cluster_=None, **kw):
        c = cluster_ or cluster
        s = {"source.dsn": c.dsn(), "source.slot": name}
        if settings:
            s.update(settings)
        kw.setdefault("binary", pgcdc_bin)
        p = harness.Pgcdc(os.path.join(workdir, sub), settings=s, opts=opts, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.kill_now()


@pytest.fixture
def writers():
    """A list to append harness.Writer objects to; they are stopped at teardown."""
    ws = []
    yield ws
    for w in ws:
        w.kill_now()
