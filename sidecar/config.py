"""The sidecar's configuration file: pydantic models for design.md's YAML, and what is built from it.

Why strict: a sidecar that starts with a typo in its config (``token_tll``, a ref to a backend that does
not exist, a role naming a secret nobody configured) fails open or fails late, at the first read in
production. So every unknown key, bad duration, bad mode, dangling reference and ambiguous name is
refused at load time with one line: ``FILE: key.path[i]: reason`` (``ConfigError``).

Reading a config never contacts a backend. ``build_backends`` constructs the backends (which validates
their options through each backend's own ``from_config``/``from_options``); ``policy_from`` turns the
roles into a ``broker.policy.Policy``; ``dev_config`` is the ``sidecar run --dev`` configuration.

This module never logs, and its error messages never contain configuration *values* that could be
secrets (a Vault token in ``auth:``): only key paths, and the text of keys the user got wrong.
"""

from __future__ import annotations

import os
import re
import signal as _signal
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.backends.interface import SecretBackend, SecretRef
from broker.cache import CachePolicy
from depthguard.durations import parse_duration
from depthguard.errors import ConfigError

if TYPE_CHECKING:
    from broker.policy import Policy

__all__ = [
    "AuditConfig",
    "BackendConfig",
    "CacheConfig",
    "LimitsConfig",
    "ListenConfig",
    "ReloadConfig",
    "RemoteConfig",
    "RenderConfig",
    "RoleConfig",
    "SecretConfig",
    "SidecarConfig",
    "TokenConfig",
    "build_backends",
    "default_env_name",
    "dev_config",
    "load_config",
    "parse_duration",
    "parse_mode",
    "policy_from",
]

DEFAULT_SOCKET = Path("/run/depthguard/sidecar.sock")

# Names travel in URLs (/v1/secrets/{name}), env var defaults and audit records: keep them one safe
# token (the same alphabet as the local store's record names, so dev mode maps 1:1).
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_BACKEND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")  # what SecretRef.parse accepts
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_CHARS = frozenset("*?[")
_TEMPLATE_FIELDS = frozenset({"value", "name", "version"})



# ------------------------------------------------------------------------------------ scalar types


class _YamlInt(int):
    """An int read from YAML that remembers its source text.

    Why: YAML 1.1 reads ``mode: 0660`` as octal but ``mode: 640`` as decimal 640, which would silently
    become 0o1200. Keeping the text lets ``parse_mode`` read every mode as octal, as chmod does."""

    text: str

    def __new__(cls, value: int, text: str) -> _YamlInt:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


def parse_mode(value: object) -> int:
    """A permission mode, always read as octal: ``"0660"``, ``"640"``, ``"0o600"``, YAML ``0660``;
    a plain Python int is taken as the mode value itself (``0o660``). At most 0777 (no setuid/sticky
    bits) and never world-writable: a secret file or socket anyone can replace protects nothing."""
    if isinstance(value, bool):
        raise ValueError('not a file mode (write it as a quoted octal string, e.g. "0640")')
    if isinstance(value, _YamlInt):
        value = value.text
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or len(text) > 4 or any(c not in "01234567" for c in text):
            raise ValueError('not an octal file mode (e.g. "0640")')
        mode = int(text, 8)
    elif isinstance(value, int):
        mode = value
    else:
        raise ValueError('not a file mode (write it as a quoted octal string, e.g. "0640")')
    if not 0 <= mode <= 0o777:
        raise ValueError("a mode must be between 0000 and 0777 (no setuid, setgid or sticky bits)")
    if mode & 0o002:
        raise ValueError(f"mode {mode:04o} is world-writable")
    return mode


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
Mode = Annotated[int, BeforeValidator(parse_mode)]


def default_env_name(secret_name: str) -> str:
    """The environment variable ``sidecar exec`` uses for a secret without ``env:``: the name
    upper-cased, every non-alphanumeric character turned into ``_`` (and ``_`` in front of a digit)."""
    env = re.sub(r"[^A-Za-z0-9]", "_", secret_name).upper()
    return "_" + env if env[:1].isdigit() else env


# ------------------------------------------------------------------------------------------ models


class _Model(BaseModel):
    """Every section refuses unknown keys: a misspelt key must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class ListenConfig(_Model):
    socket: Path = DEFAULT_SOCKET
    """The Unix socket the API listens on (``sidecar run --socket`` overrides it)."""
    mode: Mode = 0o660
    """Socket file mode: the first layer of access control (who may connect at all)."""


class BackendConfig(BaseModel):
    """``{type: vault|aws|aws-ssm|azure|local, ...options}``. The options are checked by the backend's
    own constructor in ``build_backends``, which owns the list of what it accepts."""

    model_config = ConfigDict(extra="allow")

    type: Literal["vault", "aws", "aws-ssm", "azure", "local"]

    @property
    def options(self) -> dict[str, Any]:
        """Everything except ``type``, as written in the file."""
        return dict(self.model_extra or {})


class ReloadConfig(_Model):
    """What to do after a rendered file changed: signal a process (by pidfile) or run a command."""

    signal: str = "SIGHUP"
    """Signal name sent to the pid in ``pidfile`` (``HUP`` and ``SIGHUP`` both work)."""
    pidfile: Path | None = None
    command: list[str] | None = None
    """argv, run without a shell, with a 30 s timeout."""

    @field_validator("signal")
    @classmethod
    def _signal_name(cls, value: str) -> str:
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name not in _signal.Signals.__members__:
            raise ValueError(f"unknown signal {value!r}")
        return name

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("the command must name a program (a non-empty list)")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> ReloadConfig:
        if (self.pidfile is None) == (self.command is None):
            raise ValueError("give exactly one of pidfile or command")
        if self.command is not None and "signal" in self.model_fields_set:
            raise ValueError("signal applies to pidfile, not to command")
        return self

    @property
    def signum(self) -> _signal.Signals:
        return _signal.Signals[self.signal]


class RenderConfig(_Model):
    """Write the secret to a file the app mounts (atomically, only when it changed)."""

    path: Path
    """Absolute: a relative path would depend on the sidecar's working directory."""
    mode: Mode = 0o400
    template: str | None = None
    """``string.Template`` text with ``${value}``, ``${name}``, ``${version}``; default: the raw value."""
    reload: ReloadConfig | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        if value.name in ("", ".", ".."):
            raise ValueError("must name a file")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tpl = string.Template(value)
        if not tpl.is_valid():
            raise ValueError("invalid template: use ${value}, ${name}, ${version}; write $$ for a literal $")
        unknown = sorted(set(tpl.get_identifiers()) - _TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"unknown template field ${{{unknown[0]}}} (use value, name, version)")
        return value


class SecretConfig(_Model):
    ref: str
    """``BACKEND:PATH[#KEY][@VERSION]`` whose BACKEND is a name under ``backends:``."""
    refresh: PositiveDuration | None = None
    """How long a static value is fresh (default: ``cache.refresh``)."""
    render: RenderConfig | None = None
    env: str | None = None
    """Variable name for ``sidecar exec`` (default: ``default_env_name(NAME)``)."""

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        try:
            return str(SecretRef.parse(value))
        except ConfigError as exc:
            raise ValueError(exc.reason) from None

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("not an environment variable name (letters, digits, _; no leading digit)")
        return value

    @property
    def secret_ref(self) -> SecretRef:
        return SecretRef.parse(self.ref)


class RoleConfig(_Model):
    uids: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    gids: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    """Secret names or fnmatch globs (``stripe-*``); an exact name must be configured."""
    token_ttl: PositiveDuration = 600.0
    """Lifetime of this role's tokens, capped by ``tokens.max_ttl``."""
    admin: bool = False
    """Every secret in scope (scopes ``["*"]``)."""


class RemoteConfig(_Model):
    type: Literal["http", "syslog"]
    url: str | None = None
    """``http``: where JSON-lines batches are POSTed."""
    address: str | None = None
    """``syslog``: ``host:port`` (UDP) or a local socket path such as ``/dev/log``."""
    spool: Path | None = None
    """Directory holding records while the remote is down; default ``<audit.file>.spool``."""
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _target(self) -> RemoteConfig:
        if self.type == "http" and not self.url:
            raise ValueError("an http remote needs url")
        if self.type == "http" and self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.type == "syslog" and not self.address:
            raise ValueError("a syslog remote needs address (host:port or /dev/log)")
        return self


class AuditConfig(_Model):
    file: Path | None = None
    heartbeat: PositiveDuration = 30.0
    """A heartbeat record this often, so silence (a stopped or tampered log) is detectable."""
    remote: RemoteConfig | None = None
    hmac_key_file: Path | None = None
    """Key for value fingerprints; default a random per-process key (fingerprints then do not match
    across restarts)."""

    @model_validator(mode="after")
    def _spool(self) -> AuditConfig:
        if self.remote is not None and self.remote.spool is None:
            if self.file is None:
                raise ValueError("remote.spool is required when audit.file is not set")
            self.remote.spool = self.file.with_name(self.file.name + ".spool")
        return self


class TokenConfig(_Model):
    key_file: Path | None = None
    """PEM Ed25519 signing key (0600); absent: generated and written; unset: in memory only."""
    rotate: PositiveDuration = 86400.0
    max_ttl: PositiveDuration = 3600.0
    issuer: str = "depthguard-sidecar"
    audience: str | None = None
    """Default ``"depthguard-sidecar:" + listen.socket`` (see ``SidecarConfig.token_audience``)."""
    leeway: Duration = 5.0


class LimitsConfig(_Model):
    token_rate_per_minute: float = Field(default=60.0, gt=0)
    token_burst: int = Field(default=20, ge=1)
    auth_failures_per_minute: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=16384, ge=1)
    max_header_bytes: int = Field(default=8192, ge=1)


class CacheConfig(_Model):
    """Mirrors ``broker.cache.CachePolicy`` (durations in the config's duration syntax)."""

    refresh: PositiveDuration = 300.0
    refresh_ahead: float = 0.8
    jitter: float = 0.1
    max_staleness: Duration = 300.0
    max_entries: int = 1024
    backoff_base: PositiveDuration = 1.0
    backoff_max: PositiveDuration = 60.0
    renew_fraction: float = 2 / 3

    @model_validator(mode="after")
    def _policy(self) -> CacheConfig:
        self.policy()  # CachePolicy's own checks, so the rules live in one place
        return self

    def policy(self, *, revoke_on_close: bool = False) -> CachePolicy:
        return CachePolicy(
            refresh=self.refresh, refresh_ahead=self.refresh_ahead, jitter=self.jitter,
            max_staleness=self.max_staleness, max_entries=self.max_entries,
            backoff_base=self.backoff_base, backoff_max=self.backoff_max,
            renew_fraction=self.renew_fraction, revoke_on_close=revoke_on_close,
        )


class SidecarConfig(_Model):
    """The whole file. Cross-references are checked after the sections themselves are valid."""

    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    secrets: dict[str, SecretConfig] = Field(default_factory=dict)
    roles: dict[str, RoleConfig] = Field(default_factory=dict)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    tokens: TokenConfig = Field(default_factory=TokenConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    drain_seconds: Duration = 10.0
    revoke_on_shutdown: bool = False

    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The file this was loaded from ("" when built in code); error messages name it."""
        return self._source

    # ConfigError (not ValueError) propagates through pydantic untouched, with its exact key path;
    # load_config fills in the file name.
    @model_validator(mode="after")
    def _cross_references(self) -> SidecarConfig:
        for name in self.backends:
            if not _BACKEND_NAME.match(name):
                raise ConfigError("", f"backends.{name}", "a backend name is a letter then letters, "
                                  "digits, '_' or '-' (at most 64)")
        envs: dict[str, str] = {}
        rendered: dict[Path, str] = {}
        for name, spec in self.secrets.items():
            if not _SECRET_NAME.match(name) or ".." in name:
                raise ConfigError("", f"secrets.{name}", "a secret name is letters, digits, '.', '_' and "
                                  "'-', not starting with '.' and without '..' (at most 200)")
            backend = spec.secret_ref.backend
            if backend not in self.backends:
                known = ", ".join(sorted(self.backends)) or "none"
                raise ConfigError("", f"secrets.{name}.ref",
                                  f"backend {backend!r} is not configured (backends: {known})")
            env = self.env_name(name)
            if env in envs:
                raise ConfigError("", f"secrets.{name}.env",
                                  f"environment variable {env} is also used by secret {envs[env]!r}")
            envs[env] = name
            if spec.render is not None:
                target = spec.render.path
                if target in rendered:
                    raise ConfigError("", f"secrets.{name}.render.path",
                                      f"{target} is also rendered by secret {rendered[target]!r}")
                rendered[target] = name
        for role, rc in self.roles.items():
            if not _ROLE_NAME.match(role):
                raise ConfigError("", f"roles.{role}", "a role name is letters, digits, '.', '_' and '-'")
            for i, pattern in enumerate(rc.secrets):
                if not pattern:
                    raise ConfigError("", f"roles.{role}.secrets[{i}]", "empty secret name")
                if not (_GLOB_CHARS & set(pattern)) and pattern not in self.secrets:
                    raise ConfigError("", f"roles.{role}.secrets[{i}]",
                                      f"unknown secret {pattern!r} (not under secrets:)")
        return self

    def env_name(self, secret: str) -> str:
        """The environment variable ``sidecar exec`` puts ``secret`` in."""
        return self.secrets[secret].env or default_env_name(secret)

    def token_audience(self) -> str:
        """``tokens.audience``, else one bound to this instance's socket, so a token minted by one
        sidecar is refused by another on the same host."""
        return self.tokens.audience or f"depthguard-sidecar:{self.listen.socket}"

    def role_ttl(self, role: str) -> float:
        """A role's token lifetime after the ``tokens.max_ttl`` cap."""
        return min(self.roles[role].token_ttl, self.tokens.max_ttl)

    def cache_policy(self) -> CachePolicy:
        return self.cache.policy(revoke_on_close=self.revoke_on_shutdown)


# ------------------------------------------------------------------------------------------ loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one would silently win) and keeps the text of
    ints (see ``_YamlInt``)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    return _YamlInt(value, str(node.value))


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part == "[key]":
            continue  # pydantic-internal segments, not keys the user wrote
        else:
            out += f".{part}" if out else part
    return out


def _from_validation_error(exc: ValidationError, file: str, prefix: str = "") -> ConfigError:
    """The first error as ``ConfigError(file, key.path[i], reason)``; the offending *value* is never
    quoted (it could be a token), only the key path and what is wrong with it."""
    err = exc.errors(include_url=False, include_input=False)[0]
    key = _key_path(err["loc"])
    key = f"{prefix}.{key}" if prefix and key else (prefix or key)
    kind = err["type"]
    if kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing":
        reason = "required key is missing"
    else:
        reason = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return ConfigError(file, key, reason)


def _validate(data: object, file: str) -> SidecarConfig:
    try:
        cfg = SidecarConfig.model_validate(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, file) from None
    except ConfigError as exc:
        if exc.file:
            raise
        raise ConfigError(file, exc.key, exc.reason) from None
    cfg._source = file
    return cfg


def load_config(path: Path) -> SidecarConfig:
    """Read and validate a sidecar config; every problem is one ``ConfigError(str(path), key, reason)``."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(file, "", f"cannot read: {reason}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(file, "", f"{where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "", "the top level must be a mapping (listen:, backends:, secrets:, ...)")
    return _validate(data, file)


# ---------------------------------------------------------------------------------- built from it


class _LocalOptions(_Model):
    path: Path
    key_file: Path | None = None
    """Default: ``$DEPTHGUARD_STORE_KEY``, else ``PATH/.key`` (as ``depthguard store``)."""
    max_versions: int = Field(default=10, ge=1)
    create_key: bool = False
    """Create ``PATH/.key`` on first use: development only (``dev_config`` sets it)."""


def _build_one(name: str, spec: BackendConfig) -> SecretBackend:
    options = spec.options
    if spec.type == "vault":
        from broker.backends.vault import VaultBackend

        return VaultBackend.from_config(name, options)
    if spec.type in ("aws", "aws-ssm"):
        from broker.backends.aws import AwsSecretsManagerBackend, AwsSsmBackend

        cls = AwsSecretsManagerBackend if spec.type == "aws" else AwsSsmBackend
        return cls.from_options(name, options)
    if spec.type == "azure":
        from broker.backends.azure import AzureKeyVaultBackend

        return AzureKeyVaultBackend.from_config(name, options)
    from broker.backends.local import LocalBackend

    local = _LocalOptions.model_validate(options)
    return LocalBackend.open(name, local.path, local.key_file, create_key=local.create_key,
                             max_versions=local.max_versions)


def build_backends(cfg: SidecarConfig) -> dict[str, SecretBackend]:
    """One backend instance per ``backends:`` entry, built with each backend's own constructor (which
    rejects options it does not know). Errors become ``ConfigError(cfg.source, "backends.NAME.key",
    reason)``; backends already built are closed first. SDKs are imported only for types in use."""
    built: dict[str, SecretBackend] = {}
    try:
        for name, spec in cfg.backends.items():
            prefix = f"backends.{name}"
            try:
                built[name] = _build_one(name, spec)
            except ValidationError as exc:
                raise _from_validation_error(exc, cfg.source, prefix) from None
            except ConfigError as exc:
                key = exc.key if exc.key.startswith(prefix) else ".".join(filter(None, (prefix, exc.key)))
                # StoreKeyError puts the key file / store dir in ``file``: keep it in the reason.
                reason = f"{exc.file}: {exc.reason}" if exc.file else exc.reason
                raise ConfigError(cfg.source, key, reason) from exc
            except (TypeError, ValueError) as exc:
                # The text of these can quote the option's value (a token): name only the class.
                reason = f"invalid option value ({type(exc).__name__})"
                raise ConfigError(cfg.source, prefix, reason) from None
    except BaseException:
        for backend in built.values():
            backend.close()
        raise
    return built


def policy_from(cfg: SidecarConfig) -> Policy:
    """The roles as a ``broker.policy.Policy`` (imported here, not at module level, so the config can
    be loaded and validated without the token machinery)."""
    from broker.policy import Policy, RoleSpec

    roles = [
        RoleSpec(
            name=name,
            uids=frozenset(rc.uids),
            gids=frozenset(rc.gids),
            secrets=tuple(rc.secrets),
            token_ttl=cfg.role_ttl(name),
            admin=rc.admin,
        )
        for name, rc in cfg.roles.items()
    ]
    return Policy(roles, list(cfg.secrets))


def _store_names(store_dir: Path) -> list[str]:
    """Record names in a local store directory, without the key (same rule as ``LocalStore.names``)."""
    from broker.backends.local import RECORD_SUFFIX

    if not store_dir.is_dir():
        return []
    names = []
    for p in store_dir.iterdir():
        stem = p.name[: -len(RECORD_SUFFIX)]
        if p.name.endswith(RECORD_SUFFIX) and _SECRET_NAME.match(stem) and ".." not in stem:
            names.append(stem)
    return sorted(names)


def dev_config(store_dir: Path, *, socket: Path | None = None, uid: int | None = None) -> SidecarConfig:
    """``sidecar run --dev``: the local store at ``store_dir`` (key as ``depthguard store`` finds it,
    created on first use), every secret in it granted to ``uid`` (default: ours) through role ``dev``,
    audit at ``store_dir/audit.jsonl``, socket ``store_dir/sidecar.sock`` unless given.

    A snapshot: secrets put into the store later are not in ``secrets`` until this is called again."""
    store_dir = Path(store_dir)
    data: Mapping[str, Any] = {
        "listen": {"socket": str(socket or store_dir / "sidecar.sock")},
        "backends": {"local": {"type": "local", "path": str(store_dir), "create_key": True}},
        "secrets": {name: {"ref": f"local:{name}"} for name in _store_names(store_dir)},
        "roles": {"dev": {"uids": [os.getuid() if uid is None else uid], "secrets": ["*"]}},
        "audit": {"file": str(store_dir / "audit.jsonl")},
    }
    return _validate(data, "<dev>")
