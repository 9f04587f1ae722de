"""deploy/: the systemd unit verifies, the compose file and the Kubernetes manifest parse
and say what docs/operations.md promises, and the Dockerfile's build stage builds a
working pgcdc on this machine.

No container engine is needed: the Dockerfile's build-stage RUN steps run here in a
temporary copy of what its COPY lines copy (their apt-get line is checked against the
installed packages instead of being run).
"""

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import harness as h

DEPLOY = os.path.join(h.REPO, "deploy")
UNIT = os.path.join(DEPLOY, "pgcdc.service")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
K8S = os.path.join(DEPLOY, "kubernetes.yaml")
IMAGE_CONF = os.path.join(DEPLOY, "pgcdc.conf")
ONCE_UNIT = os.path.join(DEPLOY, "pgcdc-once.service")
ONCE_TIMER = os.path.join(DEPLOY, "pgcdc-once.timer")
K8S_CRON = os.path.join(DEPLOY, "kubernetes-cronjob.yaml")


def project_version():
    with open(os.path.join(h.REPO, "CMakeLists.txt")) as f:
        return re.search(r"project\(pgcdc VERSION ([0-9.]+)", f.read()).group(1)


def parse_conf_text(text):
    """pgcdc's `key = value` file as a dict (comments and blank lines dropped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip()
    return out


def assert_config_accepted(pgcdc_bin, conf_path, extra_args=(), env=None):
    """The binary reads conf_path (plus -o args) without an unknown-key or bad-value error:
    with no source.dsn anywhere it must stop at exactly that, exit 2."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PGCDC_")}
    e.update(env or {})
    r = subprocess.run([pgcdc_bin, "run", "-c", conf_path] + list(extra_args), env=e,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "source.dsn" in r.stderr and "unknown" not in r.stderr.lower(), (
        "%s was not accepted up to the missing source.dsn (exit %d):\n%s" % (
            conf_path, r.returncode, r.stderr))


# --------------------------------------------------------------------------------------
# systemd


def parse_unit(path):
    """A strict reader of a systemd unit: [Section] headers, Key=Value lines, `#`/`;`
    comments, backslash continuations. Returns {section: [(key, value)]}."""
    sections, cur = {}, None
    with open(path) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        m = re.match(r"^\[([A-Za-z]+)\]$", line)
        if m:
            cur = m.group(1)
            assert cur not in sections, "section [%s] twice" % cur
            sections[cur] = []
            continue
        assert cur is not None, "line outside a section: %r" % line
        m = re.match(r"^([A-Za-z][A-Za-z0-9]*)=(.*)$", line)
        assert m, "not a Key=Value line in [%s]: %r" % (cur, line)
        sections[cur].append((m.group(1), m.group(2).strip()))
    return sections


def unit_get(sections, section, key):
    vals = [v for k, v in sections.get(section, []) if k == key]
    return vals[-1] if vals else None


def seconds(v):
    m = re.match(r"^(\d+)\s*(s|sec|min)?$", v)
    assert m, "not a time span: %r" % v
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_systemd_unit_is_hardened_and_restarts():
    u = parse_unit(UNIT)
    assert set(u) == {"Unit", "Service", "Install"}, sorted(u)
    svc = lambda k: unit_get(u, "Service", k)  # noqa: E731
    exec_start = shlex.split(svc("ExecStart"))
    assert exec_start[0].startswith("/") and exec_start[1] == "run", exec_start
    assert "-c" in exec_start, "the unit must read a config file: %r" % exec_start
    assert not any("dsn" in a.lower() or "password" in a.lower() for a in exec_start), (
        "a secret on ExecStart would be visible in ps")
    assert svc("EnvironmentFile"), "the DSN comes from an EnvironmentFile"
    assert svc("Restart") == "on-failure"
    assert seconds(svc("RestartSec")) >= 1
    assert "2" in svc("RestartPreventExitStatus").split(), "a config error (exit 2) must not loop"
    # SIGTERM finishes within 10 s: the stop timeout leaves a margin, but not minutes.
    assert svc("KillSignal") in (None, "SIGTERM")
    assert 10 < seconds(svc("TimeoutStopSec")) <= 30
    for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                      ("CapabilityBoundingSet", ""), ("RestrictSUIDSGID", "yes"),
                      ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes")]:
        assert svc(key) == want, "%s=%r, want %r" % (key, svc(key), want)
    assert svc("DynamicUser") == "yes" or (svc("User") and svc("User") != "root")
    # ProtectSystem=strict makes everything read-only: the state and data dirs must be
    # writable through StateDirectory= or ReadWritePaths=.
    state_dir = parse_conf_text(open(IMAGE_CONF).read())["state.dir"]
    writable = ["/var/lib/" + d for d in (svc("StateDirectory") or "").split()]
    writable += [p.lstrip("-") for p in (svc("ReadWritePaths") or "").split()]
    assert any(state_dir.startswith(w.rstrip("/") + "/") for w in writable), (
        "state.dir %s is not under a writable path %r" % (state_dir, writable))
    assert unit_get(u, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify(pgcdc_bin, tmp_path):
    """`systemd-analyze verify` must print nothing: it reports unknown keys and bad
    values as warnings with exit 0, so silence is the pass. ExecStart is pointed at the
    freshly built binary (verify insists that the command exists)."""
    with open(UNIT) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=%s" % pgcdc_bin, text)
    assert n == 1
    unit = tmp_path / "pgcdc.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        "systemd-analyze verify (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    # The sandbox, as systemd scores it: 0 (locked down) .. 10 (exposed).
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    if m is None:
        pytest.skip("this systemd-analyze cannot score a unit offline")
    assert float(m.group(1)) <= 2.0, "exposure %s:\n%s" % (m.group(1), r.stdout)


SANDBOX_KEYS = ("User", "Group", "StateDirectory", "ReadWritePaths", "UMask", "NoNewPrivileges",
                "CapabilityBoundingSet", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "PrivateUsers", "RestrictAddressFamilies", "SystemCallFilter",
                "MemoryDenyWriteExecute", "RestrictSUIDSGID", "LockPersonality")


def test_systemd_once_timer():
    """pgcdc-once.service runs `run --once` as a oneshot, sandboxed like pgcdc.service;
    pgcdc-once.timer starts it."""
    u, main = parse_unit(ONCE_UNIT), parse_unit(UNIT)
    svc = lambda k: unit_get(u, "Service", k)  # noqa: E731
    assert svc("Type") == "oneshot"
    exec_start = shlex.split(svc("ExecStart"))
    assert exec_start[0] == shlex.split(unit_get(main, "Service", "ExecStart"))[0]
    assert exec_start[1] == "run" and "--once" in exec_start and "-c" in exec_start, exec_start
    assert "--end-lsn" not in exec_start
    assert not any("dsn" in a.lower() or "password" in a.lower() for a in exec_start)
    assert svc("EnvironmentFile") == unit_get(main, "Service", "EnvironmentFile")
    assert svc("Restart") in (None, "no"), "the timer is the retry"
    assert 10 < seconds(svc("TimeoutStopSec")) <= 30
    for key in SANDBOX_KEYS:
        assert [v for k, v in u["Service"] if k == key] == \
            [v for k, v in main["Service"] if k == key], "%s differs from pgcdc.service" % key
    assert "Install" not in u, "started by the timer, not enabled on its own"
    t = parse_unit(ONCE_TIMER)
    assert set(t) == {"Unit", "Timer", "Install"}, sorted(t)
    assert unit_get(t, "Timer", "OnCalendar") or unit_get(t, "Timer", "OnUnitActiveSec")
    assert unit_get(t, "Timer", "Unit") in (None, "pgcdc-once.service")
    assert unit_get(t, "Timer", "Persistent") == "yes"
    assert unit_get(t, "Install", "WantedBy") == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify_once_timer(pgcdc_bin, tmp_path):
    with open(ONCE_UNIT) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=%s" % pgcdc_bin, text)
    assert n == 1
    (tmp_path / "pgcdc-once.service").write_text(text)
    shutil.copy(ONCE_TIMER, tmp_path / "pgcdc-once.timer")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "pgcdc-once.timer"),
                        str(tmp_path / "pgcdc-once.service")], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        "systemd-analyze verify (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    # The command line itself is accepted up to the missing DSN (-o metrics.listen= too).
    args = shlex.split(re.search(r"(?m)^ExecStart=(.*)$", text).group(1))
    conf = args[args.index("-c") + 1]
    rest = [a for a in args[2:] if a not in ("-c", conf)]
    assert_config_accepted(pgcdc_bin, IMAGE_CONF, rest)


def test_sysusers_snippet():
    with open(os.path.join(DEPLOY, "pgcdc.sysusers.conf")) as f:
        lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    user = unit_get(parse_unit(UNIT), "Service", "User")
    assert any(l[0] == "u" and l[1] == user for l in lines), lines


# --------------------------------------------------------------------------------------
# docker compose


def compose_cli():
    """argv prefix of a compose CLI that works here, or None."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run(cmd + ["version"], capture_output=True, timeout=30)
        if r.returncode == 0:
            return cmd
    return None


def test_compose_file():
    cli = compose_cli()
    if cli is not None:
        r = subprocess.run(cli + ["-f", COMPOSE, "config", "--quiet"], capture_output=True,
                           text=True, timeout=60, cwd=DEPLOY)
        assert r.returncode == 0, "%s config:\n%s" % (" ".join(cli), r.stderr)
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    services = doc["services"]
    assert {"postgres", "kafka", "pgcdc"} <= set(services), sorted(services)

    pg = services["postgres"]
    assert "wal_level=logical" in pg["command"], pg["command"]
    assert "postgresql-15-wal2json" in pg["build"]["dockerfile_inline"]
    assert re.search(r"^FROM postgres:15", pg["build"]["dockerfile_inline"], re.M)
    for vol in pg.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert os.path.exists(os.path.join(DEPLOY, src)), "missing %s" % src
    assert "healthcheck" in pg

    kafka = services["kafka"]
    kenv = kafka["environment"]
    assert "controller" in kenv["KAFKA_PROCESS_ROLES"], "Kafka must run in KRaft mode"
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in kenv
    assert not any("ZOOKEEPER" in k for k in kenv), "no ZooKeeper in KRaft mode"
    assert "zookeeper" not in services
    assert "healthcheck" in kafka

    p = services["pgcdc"]
    deps = p["depends_on"]
    assert {"postgres", "kafka"} <= set(deps), deps
    if isinstance(deps, dict):
        assert all(deps[s].get("condition") == "service_healthy" for s in ("postgres", "kafka"))
    assert os.path.normpath(os.path.join(DEPLOY, p["build"]["context"])) == h.REPO
    assert os.path.exists(os.path.join(h.REPO, p["build"]["dockerfile"]))
    assert "PGCDC_SOURCE_DSN" in p["environment"], "the DSN comes from the environment"
    args = p["command"]
    assert "sink.type=kafka" in args
    assert any(a.startswith("kafka.bootstrap.servers=kafka:") for a in args), args
    assert not any("dsn" in a.lower() for a in args), "no DSN on the command line (ps)"
    assert int(str(p.get("stop_grace_period", "10s")).rstrip("s")) > 10


def test_compose_pgcdc_settings_accepted(pgcdc_bin):
    """The compose service's -o options on top of the image's config are valid settings."""
    with open(COMPOSE) as f:
        args = yaml.safe_load(f)["services"]["pgcdc"]["command"]
    assert args[:3] == ["run", "-c", "/etc/pgcdc/pgcdc.conf"], args
    assert_config_accepted(pgcdc_bin, IMAGE_CONF, args[3:])


# --------------------------------------------------------------------------------------
# Kubernetes


def k8s_docs():
    with open(K8S) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def k8s_by_kind(docs):
    """The manifest's documents by kind, each with its apiVersion, kind and name."""
    by_kind = {}
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def k8s_mounted_conf(by_kind, pod, c):
    """Container c's config, as parsed: it comes from the ConfigMap mounted where -c reads
    it, holds no DSN, and puts state.dir and sink.file.dir on the PVC."""
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    args = c["args"]
    conf_path = args[args.index("-c") + 1]
    (cm_vol,) = [n for n, v in vols.items() if "configMap" in v]
    (cm,) = [m for m in by_kind["ConfigMap"]
             if m["metadata"]["name"] == vols[cm_vol]["configMap"]["name"]]
    assert os.path.dirname(conf_path) == mounts[cm_vol]
    conf = parse_conf_text(cm["data"][os.path.basename(conf_path)])
    assert "source.dsn" not in conf
    (pvc_vol,) = [n for n, v in vols.items() if "persistentVolumeClaim" in v]
    claim = vols[pvc_vol]["persistentVolumeClaim"]["claimName"]
    assert claim in [p["metadata"]["name"] for p in by_kind["PersistentVolumeClaim"]]
    for key in ("state.dir", "sink.file.dir"):
        assert conf[key].startswith(mounts[pvc_vol].rstrip("/") + "/"), (key, conf[key])
    return conf


def test_kubernetes_manifest():
    docs = k8s_docs()
    by_kind = k8s_by_kind(docs)
    (dep,) = by_kind["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1, "two workers on one slot must never run"
    assert spec["strategy"]["type"] == "Recreate", "a rolling update would overlap two workers"
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert 10 < pod["terminationGracePeriodSeconds"] <= 60
    (c,) = pod["containers"]

    port_by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        g = c[probe]["httpGet"]
        assert g["path"] == "/healthz", probe
        assert port_by_name.get(g["port"], g["port"]) == 9187, probe

    env = {e["name"]: e for e in c["env"]}
    ref = env["PGCDC_SOURCE_DSN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "Secret" not in by_kind or all(
        "dsn" not in (s.get("stringData") or {}) for s in by_kind["Secret"]), (
        "a DSN must not be checked in")

    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    sc = pod.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False

    # The config comes from the ConfigMap mounted where -c reads it; state.dir and
    # sink.file.dir live on the PVC; metrics.listen is the probes' port.
    conf = k8s_mounted_conf(by_kind, pod, c)
    assert conf["metrics.listen"].endswith(":9187")


def test_kubernetes_config_accepted(pgcdc_bin, tmp_path):
    (cm,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    for name, text in cm["data"].items():
        p = tmp_path / name
        p.write_text(text)
        assert_config_accepted(pgcdc_bin, str(p))


def test_kubernetes_cronjob():
    """deploy/kubernetes-cronjob.yaml: `run --once` on a schedule, never two at a time,
    a configuration error not retried, state on a volume, the DSN from the Secret."""
    with open(K8S_CRON) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = k8s_by_kind(docs)
    (cj,) = by_kind["CronJob"]
    assert cj["apiVersion"] == "batch/v1"
    spec = cj["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid", "two runs on one slot must never overlap"
    job = spec["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and 2 in r["onExitCodes"]["values"] for r in rules), (
        "exit 2 (configuration) must not be retried")
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy needs it
    assert 10 < pod["terminationGracePeriodSeconds"] <= 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["name"] == rules[0]["onExitCodes"]["containerName"]
    args = c["args"]
    assert args[0] == "run" and "--once" in args and "--end-lsn" not in args, args
    deployment = [d for d in k8s_docs() if d["kind"] == "Deployment"][0]
    assert c["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    ref = {e["name"]: e for e in c["env"]}["PGCDC_SOURCE_DSN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "pgcdc-source" and ref["key"]
    k8s_mounted_conf(by_kind, pod, c)


def test_kubernetes_cronjob_config_accepted(pgcdc_bin, tmp_path):
    with open(K8S_CRON) as f:
        (cm,) = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "ConfigMap"]
    for name, text in cm["data"].items():
        p = tmp_path / name
        p.write_text(text)
        assert_config_accepted(pgcdc_bin, str(p), ["--once"])


# --------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages(path):
    """[{'from': image, 'name': alias, 'steps': [(INSTR, args)]}] with continuations joined."""
    with open(path) as f:
        raw = f.read().split("\n")
    logical, buf = [], ""
    for line in raw:
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # a comment inside a continued instruction
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        logical.append(buf + s)
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    stages = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", args.strip(), re.I)
            assert m, line
            stages.append({"from": m.group(1), "name": m.group(2), "steps": []})
        else:
            assert stages, "instruction before FROM: %r" % line
            stages[-1]["steps"].append((instr, args.strip()))
    return stages


def apt_install_packages(cmd):
    """Packages named by every `apt-get install` in a shell command."""
    pkgs = []
    for part in re.split(r"&&|;|\|\|", cmd):
        words = shlex.split(part)
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def dpkg_installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "install ok installed"


def test_dockerfile_shape():
    stages = dockerfile_stages(DOCKERFILE)
    assert len(stages) == 2, "a build stage and a runtime stage"
    build, runtime = stages
    assert build["name"] and build["from"].startswith("debian:bookworm")
    assert runtime["from"].startswith("debian:bookworm") and "slim" in runtime["from"]
    steps = runtime["steps"]
    instrs = [i for i, _ in steps]
    user = [a for i, a in steps if i == "USER"]
    assert user and not user[-1].split(":")[0] in ("root", "0"), "run as a non-root user"
    (hc,) = [a for i, a in steps if i == "HEALTHCHECK"]
    assert "/healthz" in hc
    conf = parse_conf_text(open(IMAGE_CONF).read())
    port = conf["metrics.listen"].rsplit(":", 1)[1]
    assert conf["metrics.listen"].startswith("0.0.0.0:") and (":%s/" % port) in hc
    assert "source.dsn" not in conf, "no DSN baked into the image"
    (ep,) = [a for i, a in steps if i == "ENTRYPOINT"]
    (cmd,) = [a for i, a in steps if i == "CMD"]
    assert json.loads(ep) == ["pgcdc"]
    assert json.loads(cmd) == ["run", "-c", "/etc/pgcdc/pgcdc.conf"]
    assert "EXPOSE" in instrs
    copies = [a.split() for i, a in steps if i == "COPY"]
    assert any(c[-1] == "/etc/pgcdc/pgcdc.conf" for c in copies), copies
    # Every file the runtime image copies from the context exists and survives the
    # Dockerfile's .dockerignore.
    ignore = open(DOCKERFILE + ".dockerignore").read().split()
    for c in copies + [a.split() for i, a in build["steps"] if i == "COPY"]:
        if c[0].startswith("--from="):
            continue
        for src in c[:-1]:
            assert os.path.exists(os.path.join(h.REPO, src)), "COPY source %s missing" % src
            assert "!" + src.rstrip("/") in ignore, "%s is excluded by the .dockerignore" % src


def test_runtime_packages_cover_the_binary(pgcdc_bin):
    """Each shared library pgcdc links comes from a package the runtime stage installs
    (or libc6, which the base image has)."""
    runtime = dockerfile_stages(DOCKERFILE)[1]
    pkgs = set()
    for i, a in runtime["steps"]:
        if i == "RUN":
            pkgs.update(apt_install_packages(a))
    assert {"ca-certificates", "curl"} <= pkgs
    r = subprocess.run(["readelf", "-d", pgcdc_bin], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    # A sanitizer build (scripts/test.sh's second pass) also links its runtimes; the image
    # is built without them.
    needed = [n for n in needed if not re.match(r"lib(a|ub|l|t)san\.so", n)]
    assert needed
    ldd = subprocess.run(["ldd", pgcdc_bin], capture_output=True, text=True, check=True).stdout
    for lib in needed:
        m = re.search(r"^\s*%s => (\S+)" % re.escape(lib), ldd, re.M)
        assert m, "ldd does not resolve %s" % lib
        owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(m.group(1))],
                               capture_output=True, text=True)
        if owner.returncode != 0:  # /lib -> /usr/lib merged paths
            owner = subprocess.run(["dpkg-query", "-S", m.group(1)], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0].strip()
        assert pkg in pkgs | {"libc6"}, "%s (from %s) is not installed by the runtime stage %r" % (
            lib, pkg, sorted(pkgs))


def test_dockerfile_build_stage_runs_here(pgcdc_bin, tmp_path):
    """Run the build stage: COPY what it copies into a temp root, RUN each step with
    /bin/sh -c in its WORKDIR; then the file the runtime stage copies out of the build
    stage is a pgcdc that runs."""
    build, runtime = dockerfile_stages(DOCKERFILE)
    root = str(tmp_path / "root")
    os.makedirs(root)
    workdir = "/"

    def inside(p):
        full = p if p.startswith("/") else os.path.join(workdir, p)
        return os.path.join(root, os.path.normpath(full).lstrip("/"))

    ran = 0
    for instr, args in build["steps"]:
        if instr == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, args))
            os.makedirs(inside(workdir), exist_ok=True)
        elif instr == "COPY":
            words = args.split()
            assert not words[0].startswith("--"), "build-stage COPY flags are not simulated"
            *srcs, dest = words
            for src in srcs:
                s = os.path.join(h.REPO, src)
                d = inside(dest)
                if os.path.isdir(s):
                    # Docker copies a directory's contents into dest, slash or not.
                    shutil.copytree(s, d, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    os.makedirs(d if dest.endswith("/") else os.path.dirname(d), exist_ok=True)
                    shutil.copy2(s, d)
        elif instr == "RUN":
            pkgs = apt_install_packages(args)
            if pkgs:
                missing = [p for p in pkgs if not dpkg_installed(p)]
                assert not missing, "build packages not installed here: %s" % missing
                continue
            r = subprocess.run(["/bin/sh", "-c", args], cwd=inside(workdir), capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, "RUN %s\nfailed (%d):\n%s\n%s" % (
                args, r.returncode, r.stdout[-3000:], r.stderr[-3000:])
            ran += 1
        elif instr in ("ENV", "ARG"):
            pytest.fail("build-stage %s is not simulated; extend this test" % instr)
    assert ran >= 1
    copied = [a.split() for i, a in runtime["steps"] if i == "COPY" and a.startswith("--from=%s " % build["name"])]
    assert copied, "the runtime stage copies nothing from the build stage"
    for words in copied:
        src, dest = words[1], words[2]
        built = os.path.join(root, src.lstrip("/"))
        assert os.access(built, os.X_OK), "the build stage made no %s" % src
        assert dest.endswith("/pgcdc")
        r = subprocess.run([built, "--version"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.strip() == "pgcdc %s" % project_version(), r
        ref = subprocess.run([pgcdc_bin, "--version"], capture_output=True, text=True, timeout=10)
        assert r.stdout == ref.stdout
