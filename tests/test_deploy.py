"""The deployment examples must stay true: configs load, uids agree, and nothing in them is a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sidecar.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _k8s() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text()) if d]


def test_kubernetes_example_config_loads_and_its_role_is_the_app_uid(tmp_path: Path) -> None:
    config_map, deployment = _k8s()
    conf = tmp_path / "sidecar.yaml"
    conf.write_text(config_map["data"]["sidecar.yaml"])  # type: ignore[index]
    cfg = load_config(conf)
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    sidecar = next(c for c in pod["containers"] if c["name"] == "depthguard")
    assert cfg.roles["web"].uids == [app["securityContext"]["runAsUser"]]
    assert sidecar["securityContext"]["runAsUser"] != app["securityContext"]["runAsUser"]
    for c in (app, sidecar):
        ctx = c["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]
        assert ctx["capabilities"] == {"drop": ["ALL"]} and not ctx["allowPrivilegeEscalation"]
    # the socket directory is pod-private memory, shared only by the app and the sidecar
    run = next(v for v in pod["volumes"] if v["name"] == "depthguard-run")
    assert run["emptyDir"]["medium"] == "Memory"
    assert str(cfg.listen.socket).startswith("/run/depthguard/")


def test_compose_example_config_loads_and_its_role_is_the_app_uid() -> None:
    cfg = load_config(DEPLOY / "sidecar.compose.yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    app_uid = int(compose["services"]["app"]["user"].split(":")[0])
    assert cfg.roles["app"].uids == [app_uid]
    assert "environment" not in compose["services"]["depthguard"]  # the vault token is a file


def test_deploy_examples_hold_no_secrets() -> None:
    files = [DEPLOY / "kubernetes" / "sidecar.yaml", DEPLOY / "compose.yaml"]
    env = subprocess.run([sys.executable, "-m", "depthguard", "scan", "env", "--no-progress",
                          *[a for f in files for a in ("--file", str(f))]], capture_output=True, text=True)
    assert env.returncode == 0, env.stdout + env.stderr
    tree = subprocess.run([sys.executable, "-m", "depthguard", "scan", "dir", str(DEPLOY), "--no-progress"],
                          capture_output=True, text=True)
    assert tree.returncode == 0, tree.stdout + tree.stderr
