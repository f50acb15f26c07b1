"""``sidecar/config.py``: the YAML config, its error messages, and what is built from it."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from broker.backends.interface import SecretRef
from broker.backends.local import ENV_KEY, LocalBackend, LocalStore, resolve_key
from depthguard.errors import ConfigError
from sidecar.config import (
    SidecarConfig,
    build_backends,
    default_env_name,
    dev_config,
    load_config,
    parse_duration,
    parse_mode,
    policy_from,
)

KEY = bytes(range(32))

DESIGN_YAML = """\
listen: {socket: /run/depthguard/sidecar.sock, mode: "0660"}
backends:
  vault: {type: vault, address: "https://vault:8200", auth: {method: kubernetes, role: app}}
  aws:   {type: aws, region: eu-west-1}            # endpoint_url: http://localhost:4566 for LocalStack
  azure: {type: azure, vault_url: "https://my.vault.azure.net"}
  local: {type: local, path: /var/lib/depthguard/store, key_file: /run/keys/store.key}
secrets:
  db-password: {ref: "vault:database/creds/app#password"}
  stripe-key:  {ref: "aws:prod/stripe#api_key", refresh: 10m}
  tls-cert:    {ref: "azure:web-tls", render: {path: /run/secrets/tls.pem, mode: "0400"}}
roles:
  web:   {uids: [1000], secrets: ["db-password", "stripe-*"], token_ttl: 10m}
  admin: {uids: [0], admin: true}
audit: {file: /var/log/depthguard/audit.jsonl, heartbeat: 30s, remote: {type: http, url: "http://collector:9000"}}
"""


@pytest.fixture(autouse=True)
def _no_store_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)  # the developer's own key must not leak into tests


def write(tmp_path: Path, text: str, name: str = "sidecar.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def make_store(tmp_path: Path, secrets: dict[str, bytes]) -> tuple[Path, Path]:
    """A local store with a 0600 key file outside it, the way an operator sets one up."""
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(KEY) + b"\n")
    key_file.chmod(0o600)
    store = LocalStore(tmp_path / "store", KEY)
    for name, value in secrets.items():
        store.put(name, value)
    return store.path, key_file


# ------------------------------------------------------------------------------------ happy path


def test_design_example_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_YAML))
    assert cfg.source == str(tmp_path / "sidecar.yaml")
    assert cfg.listen.socket == Path("/run/depthguard/sidecar.sock") and cfg.listen.mode == 0o660
    assert {n: b.type for n, b in cfg.backends.items()} == {
        "vault": "vault", "aws": "aws", "azure": "azure", "local": "local"}
    assert cfg.backends["vault"].options == {
        "address": "https://vault:8200", "auth": {"method": "kubernetes", "role": "app"}}
    s = cfg.secrets
    assert s["stripe-key"].refresh == 600.0 and s["db-password"].refresh is None
    assert s["db-password"].secret_ref == SecretRef("vault", "database/creds/app", "password")
    assert s["tls-cert"].render is not None
    assert s["tls-cert"].render.mode == 0o400 and s["tls-cert"].render.path == Path("/run/secrets/tls.pem")
    assert cfg.env_name("db-password") == "DB_PASSWORD" and cfg.env_name("tls-cert") == "TLS_CERT"
    assert cfg.roles["web"].uids == [1000] and cfg.roles["web"].token_ttl == 600.0
    assert cfg.roles["admin"].admin and cfg.roles["admin"].secrets == []
    assert cfg.audit.heartbeat == 30.0 and cfg.audit.remote is not None
    assert cfg.audit.remote.spool == Path("/var/log/depthguard/audit.jsonl.spool")
    assert cfg.audit.remote.spool_max_bytes == 64 * 1024 * 1024
    assert cfg.token_audience() == "depthguard-sidecar:/run/depthguard/sidecar.sock"
    assert cfg.tokens.max_ttl == 3600.0 and cfg.tokens.leeway == 5.0 and cfg.tokens.rotate == 86400.0
    assert cfg.limits.max_body_bytes == 16384 and cfg.drain_seconds == 10.0
    policy = cfg.cache_policy()
    assert policy.max_staleness == 300.0 and policy.revoke_on_close is False


def test_additions_from_the_interfaces(tmp_path: Path) -> None:
    text = """\
listen: {socket: /tmp/x.sock}
backends: {local: {type: local, path: /srv/store}}
secrets:
  api: {ref: "local:api", env: API_TOKEN, render: {path: /run/s/api, mode: 0440, template: "k=${value}\\n",
        reload: {signal: USR1, pidfile: /run/app.pid}}}
  cert: {ref: "local:cert", render: {path: /run/s/cert, mode: 640, reload: {command: [nginx, -s, reload]}}}
roles:
  web: {gids: [33], secrets: ["a*"], token_ttl: 2h}
tokens: {max_ttl: 1h, audience: my-aud, key_file: /run/k.pem, rotate: 1d, leeway: 500ms}
limits: {token_rate_per_minute: 5, token_burst: 2}
cache: {max_staleness: 1m, refresh: 30, backoff_max: 10s}
audit: {remote: {type: syslog, address: "localhost:514", spool: /var/spool/dg}}
drain_seconds: 2.5
revoke_on_shutdown: true
"""
    cfg = load_config(write(tmp_path, text))
    api = cfg.secrets["api"]
    assert api.render is not None and api.render.reload is not None
    assert api.render.mode == 0o440 and api.render.template == "k=${value}\n"
    assert api.render.reload.signal == "SIGUSR1" and api.render.reload.pidfile == Path("/run/app.pid")
    cert = cfg.secrets["cert"].render
    assert cert is not None and cert.reload is not None
    assert cert.mode == 0o640  # unquoted YAML 640 is read as octal, like chmod
    assert cert.reload.command == ["nginx", "-s", "reload"]
    assert cfg.env_name("api") == "API_TOKEN"
    assert cfg.roles["web"].token_ttl == 7200.0 and cfg.role_ttl("web") == 3600.0  # capped by max_ttl
    assert cfg.token_audience() == "my-aud" and cfg.tokens.leeway == 0.5 and cfg.tokens.rotate == 86400.0
    assert cfg.audit.remote is not None and cfg.audit.remote.spool == Path("/var/spool/dg")
    policy = cfg.cache_policy()
    assert (policy.max_staleness, policy.refresh, policy.backoff_max, policy.revoke_on_close) == (
        60.0, 30.0, 10.0, True)
    assert cfg.drain_seconds == 2.5


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "# nothing yet\n"))
    assert cfg.secrets == {} and cfg.roles == {} and cfg.listen.mode == 0o660


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("2d", 172800.0), ("1.5h", 5400.0),
     (45, 45.0), (2.5, 2.5), ("12", 12.0), (" 3 s ", 3.0), (0, 0.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "ms", "-5s", "1h30m", "", True, None, [1], "inf", float("nan")])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "mode"), [("0660", 0o660), ("640", 0o640), ("0o600", 0o600), (0o440, 0o440)]
)
def test_modes(text: object, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["0999", "rw-r--r--", "04755", "0666", "0777", "", True, 1.5, 0o1000])
def test_bad_modes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_mode(text)


@pytest.mark.parametrize(
    ("name", "env"), [("db-password", "DB_PASSWORD"), ("a.b_c", "A_B_C"), ("1pw", "_1PW")]
)
def test_default_env_names(name: str, env: str) -> None:
    assert default_env_name(name) == env


# ---------------------------------------------------------------------------------------- errors

BASE = """\
backends:
  local: {type: local, path: /srv/store}
secrets:
  db: {ref: "local:db"}
  api-key: {ref: "local:api"}
roles:
  web: {uids: [1000], secrets: ["db", "api-*"]}
"""


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        # unknown keys, at any depth
        ("roles:", "bogus: 1\nroles:", "bogus", "unknown key"),
        ("secrets: [\"db\", \"api-*\"]", "secrets: [\"db\", \"api-*\"], token_tll: 5m", "roles.web.token_tll",
         "unknown key"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, mdoe: "0400"}}',
         "secrets.db.render.mdoe", "unknown key"),
        # bad durations and modes
        ("secrets: [\"db\", \"api-*\"]", "secrets: [\"db\"], token_ttl: 10 minutes", "roles.web.token_ttl",
         "not a duration"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", refresh: 0}', "secrets.db.refresh", "longer than 0"),
        ("roles:", "cache: {max_staleness: soon}\nroles:", "cache.max_staleness", "not a duration"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, mode: "0999"}}',
         "secrets.db.render.mode", "octal"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, mode: "0666"}}',
         "secrets.db.render.mode", "world-writable"),
        ("roles:", "listen: {socket: /x.sock, mode: rw}\nroles:", "listen.mode", "octal"),
        # references
        ('ref: "local:db"', 'ref: "vault:secret/db#pw"', "secrets.db.ref",
         "backend 'vault' is not configured"),
        ('ref: "local:db"', 'ref: "no reference"', "secrets.db.ref", "not a secret reference"),
        ('["db", "api-*"]', '["db", "api-*", "nope"]', "roles.web.secrets[2]", "unknown secret 'nope'"),
        ("type: local", "type: gcp", "backends.local.type", "Input should be"),
        ("backends:\n", "backends:\n  '9bad': {type: local, path: /x}\n", "backends.9bad", "backend name"),
        ("  db: {ref", "  ../etc: {ref: \"local:x\"}\n  db: {ref", "secrets.../etc", "secret name"),
        # render
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: run/db}}', "secrets.db.render.path",
         "absolute"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, template: "${secret}"}}',
         "secrets.db.render.template", "unknown template field"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, reload: {signal: HUP}}}',
         "secrets.db.render.reload", "exactly one of pidfile or command"),
        ('db: {ref: "local:db"}', 'db: {ref: "local:db", render: {path: /r/db, reload: {signal: SIGNOPE, '
         'pidfile: /p}}}', "secrets.db.render.reload.signal", "unknown signal"),
        ('api-key: {ref: "local:api"}', 'api-key: {ref: "local:api", render: {path: /r/x}}\n  db2: {ref: '
         '"local:db", render: {path: /r/x}}', "secrets.db2.render.path", "also rendered by secret 'api-key'"),
        # env names
        ('api-key: {ref: "local:api"}', 'api-key: {ref: "local:api", env: DB}', "secrets.api-key.env",
         "environment variable DB is also used by secret 'db'"),
        ('api-key: {ref: "local:api"}', 'api-key: {ref: "local:api", env: "1-X"}', "secrets.api-key.env",
         "not an environment variable name"),
        # types
        ("uids: [1000]", "uids: [-1]", "roles.web.uids[0]", "greater than or equal to 0"),
        ("uids: [1000]", "uids: [1000, root]", "roles.web.uids[1]", "valid integer"),
        ("roles:", "audit: {remote: {type: http}}\nroles:", "audit.remote", "needs url"),
        ("roles:", "audit: {remote: {type: http, url: 'http://x'}}\nroles:", "audit",
         "remote.spool is required"),
        ("roles:", "cache: {jitter: 2}\nroles:", "cache", "jitter"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, old: str, new: str, key: str, reason: str) -> None:
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.file, err.value.key) == (str(path), key), str(err.value)
    assert reason in err.value.reason
    assert str(err.value) == f"{path}: {key}: {err.value.reason}" and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("secrets: [\n", "line 2"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("roles: {}\nroles: {}\n", "line 2: duplicate key 'roles'"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=reason) as err:
        load_config(path)
    assert err.value.file == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_validation_errors_never_quote_a_value(tmp_path: Path) -> None:
    token = "hvs.SUPERSECRETTOKENVALUE"
    path = write(tmp_path, f"backends:\n  v: {{type: vault, address: 5, auth: {{token: {token}}}}}\n"
                           f"listen: {{mode: {token}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert token not in str(err.value)


# ------------------------------------------------------------------------------ built from config


def test_build_backends_local_store(tmp_path: Path) -> None:
    store_dir, key_file = make_store(tmp_path, {"db": b"s3cret\x00\xff"})
    path = write(tmp_path, f"""\
backends:
  local: {{type: local, path: {store_dir}, key_file: {key_file}}}
secrets:
  db: {{ref: "local:db"}}
""")
    cfg = load_config(path)
    backends = build_backends(cfg)
    try:
        assert set(backends) == {"local"} and isinstance(backends["local"], LocalBackend)
        got = backends["local"].read(cfg.secrets["db"].secret_ref)
        assert got.value == b"s3cret\x00\xff" and got.version == "1"
        assert backends["local"].health().ok
    finally:
        for b in backends.values():
            b.close()


@pytest.mark.parametrize(
    ("backend", "key", "reason"),
    [
        ("{type: local, path: STORE, key_file: KEY, colour: red}", "backends.b.colour", "unknown key"),
        ("{type: local, key_file: KEY}", "backends.b.path", "required"),
        ("{type: local, path: STORE, key_file: /nonexistent/key}", "backends.b.key_file", "no such key file"),
        ("{type: local, path: STORE, key_file: LOOSE}", "backends.b.key_file", "must be 0600"),
        ("{type: local, path: STORE, max_versions: 0}", "backends.b.max_versions", "greater than or equal"),
        ("{type: aws, region: eu-west-1, regoin: x}", "backends.b.regoin", "unknown key"),
        ("{type: vault}", "backends.b.address", "required"),
        ("{type: vault, address: 'http://v:8200', auth: {method: magic}}", "backends.b.auth.method",
         "one of"),
        ("{type: azure, vault_url: 'http://plain'}", "backends.b.vault_url", "https://"),
    ],
)
def test_build_backends_errors(tmp_path: Path, backend: str, key: str, reason: str) -> None:
    store_dir, key_file = make_store(tmp_path, {})
    loose = tmp_path / "loose.key"
    loose.write_bytes(base64.b64encode(KEY))
    loose.chmod(0o644)
    spec = backend.replace("STORE", str(store_dir)).replace("KEY", str(key_file)).replace("LOOSE", str(loose))
    path = write(tmp_path, f"backends:\n  b: {spec}\n")
    cfg = load_config(path)  # loading never builds (nor contacts) a backend
    with pytest.raises(ConfigError) as err:
        build_backends(cfg)
    assert (err.value.file, err.value.key) == (str(path), key), str(err.value)
    assert reason in err.value.reason


def test_build_backends_aws_is_offline(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "backends:\n  aws: {type: aws, region: eu-west-1}\n"
                                      "  ssm: {type: aws-ssm, region: eu-west-1}\n"))
    backends = build_backends(cfg)
    kinds = sorted(type(b).__name__ for b in backends.values())
    assert kinds == ["AwsSecretsManagerBackend", "AwsSsmBackend"]
    for b in backends.values():
        b.close()


def test_dev_config(tmp_path: Path) -> None:
    store_dir = tmp_path / "dev"
    key = resolve_key(store_dir, create=True)  # what `depthguard store put` does on first use
    store = LocalStore(store_dir, key.key)
    store.put("db-password", b"pw")
    store.put("api.key", b"k")
    cfg = dev_config(store_dir)
    assert cfg.listen.socket == store_dir / "sidecar.sock" and cfg.listen.mode == 0o660
    assert cfg.audit.file == store_dir / "audit.jsonl"
    refs = {n: s.ref for n, s in cfg.secrets.items()}
    assert refs == {"api.key": "local:api.key", "db-password": "local:db-password"}
    assert cfg.roles["dev"].uids == [os.getuid()] and cfg.roles["dev"].secrets == ["*"]
    backends = build_backends(cfg)
    assert backends["local"].read(cfg.secrets["db-password"].secret_ref).value == b"pw"
    other = dev_config(store_dir, socket=tmp_path / "s.sock", uid=4242)
    assert other.listen.socket == tmp_path / "s.sock" and other.roles["dev"].uids == [4242]


def test_dev_config_on_a_fresh_directory_creates_the_key(tmp_path: Path) -> None:
    store_dir = tmp_path / "fresh"
    cfg = dev_config(store_dir)
    assert cfg.secrets == {}
    build_backends(cfg)
    assert stat.S_IMODE((store_dir / ".key").stat().st_mode) == 0o600


def test_config_built_in_code_gets_the_same_checks() -> None:
    with pytest.raises(ConfigError) as err:
        SidecarConfig.model_validate({"secrets": {"x": {"ref": "nope:x"}}})
    assert err.value.key == "secrets.x.ref"


def test_policy_from(tmp_path: Path) -> None:
    pytest.importorskip("broker.policy", reason="broker/policy.py (helper 'tokens') has not landed yet")
    cfg = load_config(write(tmp_path, BASE.replace("roles:", "tokens: {max_ttl: 5m}\nroles:")
                            + "  admin: {uids: [0], admin: true}\n"))
    policy = policy_from(cfg)
    web = policy.role("web")
    assert web.uids == frozenset({1000}) and web.secrets == ("db", "api-*") and web.token_ttl == 300.0
    assert policy.roles_for(1000, []) == ["web"] and policy.roles_for(0, []) == ["admin"]
    assert policy.allows(policy.scopes("web"), "api-key") and not policy.allows(policy.scopes("web"), "other")
    assert policy.visible(policy.scopes("admin")) == ["api-key", "db"]
