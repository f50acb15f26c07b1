"""Environment scanning against real processes and real files: a child started with planted secrets,
every process, this process, and .env / Kubernetes / Helm / compose files with line numbers.

No mocks: processes are real (``/proc/PID/environ``), permission checks are the kernel's, files are
written to a temp dir. Secrets are synthetic (``tests.secretgen``).
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from depthguard.errors import SourceError
from scanners.allow import Allowlist
from scanners.engine import Engine
from scanners.envnames import RULE_ID
from scanners.finding import Finding
from scanners.rulepack import builtin_rules
from scanners.sources.env import (
    scan_all_processes,
    scan_env_files,
    scan_own_env,
    scan_pid,
    scan_variables,
)
from tests.secretgen import github_token, rand

pytestmark = pytest.mark.integration

NOBODY = 65534
HIGH_ENTROPY = "Gqc#fQ7.ZvqsP3CCT#nK*EBJMhw5k62r"
SESSION_KEY = "Qx7Lm2Vz9Kp4Wr7Nt3Yb6Hc5"  # only the name heuristic reports a value under this name
DEPLOY_KEY = "Zk3Vm7Lp2Wr9Nt4Yb6Hc1Xq8"
ADMIN_AUTH = "Hb4Nc6Jd9Qw8zLp3Nx7Rk2V"
SHA1 = "4f7523259a0003ab98175bd257ec55e43e9371a3"


def _pem() -> str:
    body = base64.b64encode(random.Random(7).randbytes(96)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----"])


def by_path(findings: list[Finding]) -> dict[str, Finding]:
    out = {f.path: f for f in findings}
    assert len(out) == len(findings), sorted(f.path for f in findings)  # one finding per variable
    return out


def where(f: Finding) -> tuple[str, int, int, int]:
    return f.path, f.line, f.column, f.end_column


# ---------------------------------------------------------------------------------------------------
# processes


def wait_for_exec(pid: int) -> None:
    """Until the child has exec'd, /proc/PID/environ is still the forked parent's environment."""
    deadline = time.monotonic() + 10
    while b"time.sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "child did not exec"
        time.sleep(0.005)


@pytest.fixture()
def child() -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """A real process whose environment holds a GitHub token and a random password."""
    token, password = github_token(), rand(28) + "!#"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
           "APP_TOKEN": token, "DB_PASSWORD": password, "GIT_COMMIT": SHA1,
           "DB_PASSWORD_REF": "vault:secret/data/db#password"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    wait_for_exec(proc.pid)
    try:
        yield proc, token, password
    finally:
        proc.kill()
        proc.wait()


def test_scan_pid_finds_planted_secrets_in_a_child(
    engine: Engine, child: tuple[subprocess.Popen[bytes], str, str]
) -> None:
    proc, token, password = child
    scan = scan_pid(engine, proc.pid)
    found = by_path(scan.findings)
    assert set(found) == {"env:APP_TOKEN", "env:DB_PASSWORD"}  # PATH, HOME, sha1, reference: nothing
    assert found["env:APP_TOKEN"].rule_id == "github-pat-classic"
    assert found["env:APP_TOKEN"].secret == token
    assert found["env:DB_PASSWORD"].secret == password
    for f in scan.findings:
        assert f.source == "env" and f.line == 1
        assert f.extra["pid"] == proc.pid and f.extra["command"].startswith("python")
    assert where(found["env:APP_TOKEN"]) == ("env:APP_TOKEN", 1, 11, 11 + len(token))
    assert scan.stats.files == 6 and scan.stats.rules == len(engine.rules)


def test_scan_all_processes_groups_child_findings_under_its_pid(
    engine: Engine, child: tuple[subprocess.Popen[bytes], str, str]
) -> None:
    proc, token, password = child
    scan = scan_all_processes(engine)
    mine = [f for f in scan.findings if f.extra["pid"] == proc.pid]
    assert {f.path for f in mine} == {"env:APP_TOKEN", "env:DB_PASSWORD"}
    assert {f.secret for f in mine} == {token, password}
    pids = [f.extra["pid"] for f in scan.findings]
    assert pids == sorted(pids)
    positions = [i for i, f in enumerate(scan.findings) if f.extra["pid"] == proc.pid]
    assert positions == list(range(positions[0], positions[0] + len(positions)))  # contiguous group
    assert scan.stats.files >= 6
    assert set(scan.stats.skipped) <= {"permission", "exited", "no-environment", "unreadable"}


def test_scan_pid_of_a_missing_process_is_a_source_error(engine: Engine) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in (pid_max + 1, 0, -5):
        with pytest.raises(SourceError) as err:
            scan_pid(engine, pid)
        assert str(err.value) == f"--pid {pid}: no such process"


def test_scan_pid_of_an_exited_process_is_a_source_error(engine: Engine) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists (reuse within this test is practically impossible)
    with pytest.raises(SourceError, match="no such process"):
        scan_pid(engine, proc.pid)


def test_scan_pid_of_a_zombie_is_empty_not_an_error(engine: Engine) -> None:
    """A zombie still has a pid but no address space: older kernels read its environ as empty,
    newer ones refuse it with ESRCH; either way it has nothing to scan and is not "no such process"."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 20
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        scan = scan_pid(engine, proc.pid)
        assert scan.findings == [] and scan.stats.files == 0
    finally:
        proc.wait()


def _as_nobody(fn: str, target: int, engine: Engine) -> str:
    """Run ``scan_pid`` or ``scan_all_processes`` in a forked child that has dropped root for uid
    65534, and return what it saw (an error message or the skip counts)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                if fn == "pid":
                    scan_pid(engine, target)
                    out = "no error"
                else:
                    out = repr(sorted(scan_all_processes(engine).stats.skipped.items()))
            except SourceError as exc:
                out = str(exc)
            os.write(write, out.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        got = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return got


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork a child that drops to uid 65534; as "
                    "a normal user no process of another user is guaranteed to exist")
def test_scan_pid_permission_denied(python_engine: Engine) -> None:
    got = _as_nobody("pid", os.getpid(), python_engine)
    assert got == f"--pid {os.getpid()}: permission denied (run as the process's user or root)"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork a child that drops to uid 65534")
def test_scan_all_processes_counts_unreadable_processes_as_skipped(python_engine: Engine) -> None:
    got = _as_nobody("all", 0, python_engine)
    assert "('permission', " in got  # root's processes (this one at least) were refused and counted


def test_scan_own_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    token = github_token()
    monkeypatch.setenv("DG_TEST_APP_TOKEN", token)
    monkeypatch.setenv("DG_TEST_SESSION_KEY", SESSION_KEY)
    monkeypatch.setenv("DG_TEST_IMAGE_DIGEST", f"sha256:{SHA1}{SHA1[:24]}")
    scan = scan_own_env(engine)
    ours = {f.path: f for f in scan.findings if f.path.startswith("env:DG_TEST_")}
    assert set(ours) == {"env:DG_TEST_APP_TOKEN", "env:DG_TEST_SESSION_KEY"}
    assert ours["env:DG_TEST_APP_TOKEN"].secret == token
    assert ours["env:DG_TEST_SESSION_KEY"].rule_id == RULE_ID
    assert scan.stats.files == sum(1 for k, v in os.environb.items() if k and v)


def test_scan_variables_keeps_the_image_scanners_call_shape(engine: Engine) -> None:
    token = github_token()
    found = scan_variables(engine, [("PATH", "/usr/bin"), ("GH_TOKEN", token), ("SESSION_KEY", SESSION_KEY)],
                           source="image", extra={"in": "config.Env"})
    assert [(f.path, f.source, f.extra) for f in found] == [
        ("env:GH_TOKEN", "image", {"in": "config.Env"}),
        ("env:SESSION_KEY", "image", {"in": "config.Env"}),
    ]
    assert where(found[1]) == ("env:SESSION_KEY", 1, 13, 13 + len(SESSION_KEY))


def test_heuristic_obeys_the_configured_allowlist() -> None:
    engine = Engine(builtin_rules(), engine="python", allowlist=Allowlist.build(values=[SESSION_KEY]))
    assert scan_variables(engine, [("SESSION_KEY", SESSION_KEY), ("DEPLOY_KEY", DEPLOY_KEY)])[0].path == (
        "env:DEPLOY_KEY")
    assert len(scan_variables(engine, [("SESSION_KEY", SESSION_KEY)])) == 0


# ---------------------------------------------------------------------------------------------------
# files


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_dotenv_file(engine: Engine, tmp_path: Path) -> None:
    token, token2 = github_token(), github_token()
    path = write(tmp_path, ".env", (
        "# local settings\n"                                     # 1
        f"export APP_TOKEN={token}\n"                            # 2
        f'DB_PASSWORD="{HIGH_ENTROPY}"  # a comment\n'            # 3
        "SMTP_PASSWORD='Tr0ub4dor#3xQ!Vn8kQ2pLx5'\n"             # 4
        'MULTI="first line\n'                                    # 5
        f"  token {token2}\n"                                    # 6: inside MULTI's value
        'last line"\n'                                           # 7
        "PATH=/usr/local/bin:/usr/bin\n"                         # 8
        f"GIT_COMMIT={SHA1}\n"                                   # 9
        "API_TOKEN=vault:secret/data/app#token\n"                # 10
        "DB_PASSWORD_FILE=/run/secrets/db\n"                     # 11
        f"   DEPLOY_KEY = {DEPLOY_KEY} # trailing comment\n"     # 12
        f"ADMIN_AUTH={ADMIN_AUTH}  # depthguard:allow\n"         # 13
    ))
    scan = scan_env_files(engine, [path])
    found = by_path(scan.findings)
    assert set(found) == {"env:APP_TOKEN", "env:DB_PASSWORD", "env:SMTP_PASSWORD", "env:MULTI",
                          "env:DEPLOY_KEY"}
    assert where(found["env:APP_TOKEN"]) == ("env:APP_TOKEN", 2, 18, 18 + len(token))
    assert where(found["env:DB_PASSWORD"]) == ("env:DB_PASSWORD", 3, 14, 14 + len(HIGH_ENTROPY))
    assert found["env:SMTP_PASSWORD"].secret == "Tr0ub4dor#3xQ!Vn8kQ2pLx5"  # '#' inside quotes kept
    assert where(found["env:MULTI"]) == ("env:MULTI", 6, 9, 9 + len(token2))  # line 2 of the value
    assert where(found["env:DEPLOY_KEY"]) == ("env:DEPLOY_KEY", 12, 17, 17 + len(DEPLOY_KEY))
    assert found["env:DEPLOY_KEY"].rule_id == RULE_ID
    assert [f.path for f in scan.findings] == ["env:APP_TOKEN", "env:DB_PASSWORD", "env:SMTP_PASSWORD",
                                               "env:MULTI", "env:DEPLOY_KEY"]  # file order
    assert all(f.extra == {"file": str(path), "kind": "dotenv"} for f in scan.findings)
    assert scan.stats.files == 10 and scan.warnings == []  # lines 6-7 belong to MULTI


def test_dotenv_oddities_warn_without_values(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "app.env", f"garbage {HIGH_ENTROPY}\nNO_VALUE\nESCAPED=\"a\\tb\"\n"
                                      f'DB_PASSWORD="{HIGH_ENTROPY}\n')
    scan = scan_env_files(engine, [path])
    assert [f.path for f in scan.findings] == ["env:DB_PASSWORD"]
    assert scan.warnings == [f"{path}:1: not a NAME=VALUE line, skipped",
                             f"{path}:4: DB_PASSWORD: unterminated quote, value read to the end of the line"]
    assert HIGH_ENTROPY not in "".join(scan.warnings)


K8S = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: prod
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          env:
            - name: DB_PASSWORD
              value: "{password}"
      containers:
        - name: app
          env:
            - name: SESSION_KEY
              value: {session}
            - name: API_TOKEN
              valueFrom:
                secretKeyRef: {{name: api, key: token}}
            - name: LOG_LEVEL
              value: debug
          envFrom:
            - secretRef: {{name: more}}
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: prod
type: Opaque
data:
  DEPLOY_KEY: {deploy_b64}
  DB_USER: YXBw
  BROKEN: "not*base64"
  tls.key: {pem_b64}
stringData:
  ADMIN_AUTH: {admin}
  GH_TOKEN: "{token}"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  LEAKED_TOKEN: {token2}
  IMAGE_DIGEST: "sha256:{sha}"
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: job
              env:
                - {{name: REGISTRY_AUTH, value: {admin}}}
"""


def test_kubernetes_manifests(engine: Engine, tmp_path: Path) -> None:
    token, token2, pem = github_token(), github_token(), _pem()
    path = write(tmp_path, "deploy.yaml", K8S.format(
        password=HIGH_ENTROPY, session=SESSION_KEY, admin=ADMIN_AUTH, token=token, token2=token2, sha=SHA1,
        deploy_b64=base64.b64encode(DEPLOY_KEY.encode()).decode(),
        pem_b64=base64.b64encode(pem.encode()).decode(),
    ))
    scan = scan_env_files(engine, [path])
    found = {(f.extra["object"], f.path): f for f in scan.findings}
    assert set(found) == {
        ("Deployment/prod/web", "env:DB_PASSWORD"), ("Deployment/prod/web", "env:SESSION_KEY"),
        ("Secret/prod/creds", "env:DEPLOY_KEY"), ("Secret/prod/creds", "env:tls.key"),
        ("Secret/prod/creds", "env:ADMIN_AUTH"), ("Secret/prod/creds", "env:GH_TOKEN"),
        ("ConfigMap/settings", "env:LEAKED_TOKEN"), ("CronJob/nightly", "env:REGISTRY_AUTH"),
    }
    web_pw = found["Deployment/prod/web", "env:DB_PASSWORD"]
    assert (web_pw.line, web_pw.column) == (13, 23)
    assert web_pw.extra == {"file": str(path), "kind": "kubernetes", "object": "Deployment/prod/web",
                            "container": "migrate"}
    assert found["Deployment/prod/web", "env:SESSION_KEY"].extra["container"] == "app"
    assert found["Deployment/prod/web", "env:SESSION_KEY"].line == 18
    deploy = found["Secret/prod/creds", "env:DEPLOY_KEY"]
    assert (deploy.secret, deploy.line, deploy.extra["field"], deploy.extra["encoding"]) == (
        DEPLOY_KEY, 34, "data", "base64")
    key = found["Secret/prod/creds", "env:tls.key"]
    assert (key.rule_id, key.line, key.secret) == ("private-key-rsa", 37, pem)
    assert found["Secret/prod/creds", "env:GH_TOKEN"].line == 40
    assert found["Secret/prod/creds", "env:GH_TOKEN"].extra["field"] == "stringData"
    assert found["ConfigMap/settings", "env:LEAKED_TOKEN"].line == 47
    assert found["CronJob/nightly", "env:REGISTRY_AUTH"].extra["container"] == "job"
    assert scan.warnings == [f"{path}:36: Secret/prod/creds data key 'BROKEN': invalid base64, not scanned"]


def test_kubernetes_list_and_block_scalar_positions(engine: Engine, tmp_path: Path) -> None:
    pem = _pem()
    block = "\n".join("      " + line for line in pem.split("\n"))
    path = write(tmp_path, "list.yml", (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Secret\n  metadata: {name: tls}\n  stringData:\n"
        f"    tls.key: |\n{block}\n"
    ))
    (f,) = scan_env_files(engine, [path]).findings
    assert (f.path, f.rule_id, f.extra["object"]) == ("env:tls.key", "private-key-rsa", "Secret/tls")
    assert (f.line, f.column) == (9, 7)  # the BEGIN line inside the literal block, past its indentation


def test_helm_values(engine: Engine, tmp_path: Path) -> None:
    token = github_token()
    path = write(tmp_path, "values-prod.yaml", (
        "image:\n"                                        # 1
        "  repository: registry.test/app\n"               # 2
        f"  digest: sha256:{SHA1}{SHA1[:24]}\n"           # 3
        "postgresql:\n"                                   # 4
        "  auth:\n"                                       # 5
        f"    postgresPassword: '{HIGH_ENTROPY}'\n"       # 6
        "    existingSecret: my-release-postgresql\n"     # 7
        f"    sessionKey: {SESSION_KEY}\n"                # 8
        "api:\n"                                          # 9
        "  extraEnv:\n"                                   # 10
        "    - name: GH_TOKEN\n"                          # 11
        f"      value: {token}\n"                         # 12
        "    - name: LOG_LEVEL\n"                         # 13
        "      value: info\n"                             # 14
        "  replicas: 3\n"                                 # 15
        "  hosts: [a.test, b.test]\n"                     # 16
        "  enabled: true\n"                               # 17
        "  password: ~\n"                                 # 18
    ))
    scan = scan_env_files(engine, [path])
    found = by_path(scan.findings)
    assert set(found) == {"env:postgresql.auth.postgresPassword", "env:postgresql.auth.sessionKey",
                          "env:api.extraEnv.GH_TOKEN"}
    assert where(found["env:postgresql.auth.postgresPassword"])[1:] == (6, 24, 24 + len(HIGH_ENTROPY))
    assert found["env:postgresql.auth.sessionKey"].rule_id == RULE_ID  # leaf ``sessionKey`` judged
    assert found["env:postgresql.auth.sessionKey"].line == 8
    assert found["env:api.extraEnv.GH_TOKEN"].line == 12
    assert all(f.extra == {"file": str(path), "kind": "helm"} for f in scan.findings)


def test_compose_list_and_mapping_forms(engine: Engine, tmp_path: Path) -> None:
    token = github_token()
    path = write(tmp_path, "docker-compose.yml", (
        "x-common: &common\n"                             # 1
        f"  SHARED_AUTH: {ADMIN_AUTH}\n"                  # 2
        "services:\n"                                     # 3
        "  api:\n"                                        # 4
        "    image: app\n"                                # 5
        "    environment:\n"                              # 6
        f"      - GH_TOKEN={token}\n"                     # 7
        f'      - "SESSION_KEY={SESSION_KEY}"\n'          # 8
        "      - DB_PASSWORD=${DB_PASSWORD}\n"            # 9
        "      - PASSTHROUGH\n"                           # 10
        "    env_file: [.env, ./secrets.env]\n"           # 11
        "  db:\n"                                         # 12
        "    build:\n"                                    # 13
        "      context: .\n"                              # 14
        "      args:\n"                                   # 15
        f"        DEPLOY_KEY: {DEPLOY_KEY}\n"             # 16
        "    environment:\n"                              # 17
        "      <<: *common\n"                             # 18
        f"      POSTGRES_PASSWORD: \"{HIGH_ENTROPY}\"\n"  # 19
        "      POSTGRES_DB: app\n"                        # 20
        "      EMPTY:\n"                                  # 21
    ))
    scan = scan_env_files(engine, [path])
    got = [(f.extra["service"], *where(f)) for f in scan.findings]
    assert got == [
        ("db", "env:SHARED_AUTH", 2, 16, 16 + len(ADMIN_AUTH)),  # merged in: the value is at the anchor
        ("api", "env:GH_TOKEN", 7, 18, 18 + len(token)),
        ("api", "env:SESSION_KEY", 8, 22, 22 + len(SESSION_KEY)),
        ("db", "env:DEPLOY_KEY", 16, 21, 21 + len(DEPLOY_KEY)),
        ("db", "env:POSTGRES_PASSWORD", 19, 27, 27 + len(HIGH_ENTROPY)),
    ]
    assert scan.findings[3].extra == {"file": str(path), "kind": "compose", "service": "db",
                                      "in": "build.args"}
    assert scan.warnings == [
        f"{path}: service api: env_file {name} not followed (scan it with --file)"
        for name in (".env", "./secrets.env")
    ]


def test_kind_is_detected_by_content(engine: Engine, tmp_path: Path) -> None:
    """A compose file and a dotenv file under names that say nothing about their kind."""
    compose = write(tmp_path, "stack.yaml",
                    f"services:\n  web:\n    environment:\n      ADMIN_AUTH: {ADMIN_AUTH}\n")
    dotenv = write(tmp_path, "settings", f"# vars\nADMIN_AUTH={ADMIN_AUTH}\n")
    scan = scan_env_files(engine, [compose, dotenv])
    assert [(f.extra["kind"], f.extra["file"], f.line) for f in scan.findings] == [
        ("compose", str(compose), 4), ("dotenv", str(dotenv), 2)]


def test_invalid_yaml_and_missing_file_are_source_errors(engine: Engine, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", f"a: 1\nb: [unclosed, {HIGH_ENTROPY}\nc: 2\n")
    with pytest.raises(SourceError) as err:
        scan_env_files(engine, [bad])
    msg = str(err.value)
    assert msg.startswith(f"--file {bad}: invalid YAML at line ") and "\n" not in msg
    assert HIGH_ENTROPY not in msg
    missing = tmp_path / "nope.env"
    with pytest.raises(SourceError) as err:
        scan_env_files(engine, [missing])
    assert str(err.value) == f"--file {missing}: no such file or directory"


def test_binary_file_is_skipped_with_a_warning(engine: Engine, tmp_path: Path) -> None:
    blob = tmp_path / "blob.env"
    blob.write_bytes(b"\x00\x01\x02PASSWORD=x\x00")
    scan = scan_env_files(engine, [blob])
    assert scan.findings == [] and scan.stats.skipped == {"binary": 1}
    assert scan.warnings == [f"{blob}: binary file, not scanned"]


def test_alias_bomb_and_deep_nesting_stay_bounded(engine: Engine, tmp_path: Path) -> None:
    """Aliases are walked once (a billion laughs is ten lines here); absurd nesting stops with a warning."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    bomb = write(tmp_path, "values.yaml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    scan = scan_env_files(engine, [bomb])
    assert time.perf_counter() - started < 10
    assert scan.findings == [] and scan.warnings == [] and scan.stats.files == 10  # a's ten x, once
    deep = write(tmp_path, "values-deep.yaml", "a:\n" + "".join(f"{'  ' * i}a:\n" for i in range(1, 100))
                 + f"{'  ' * 100}sessionKey: {SESSION_KEY}\n")
    scan = scan_env_files(engine, [deep])
    assert scan.findings == []
    assert scan.warnings == [f"{deep}: YAML too large or too deeply nested, rest not scanned"]
