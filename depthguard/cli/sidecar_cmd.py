"""``depthguard sidecar run|token|get|exec``: run the secrets sidecar, and talk to it from a shell.

Thin on purpose: ``run`` builds a configuration (a file, or ``--dev``'s local store) and hands it to
``sidecar.server``; ``token``/``get`` are ``sidecar.client`` calls; ``exec`` is
``sidecar.envexec.run_with_secrets``. Values and tokens go to stdout only, exactly (``get`` adds no
newline), never to stderr or logs. Failures of the client (no server, refused, not found) are
re-raised as ``UsageError``: one line and exit 2 via ``depthguard.cli.main``.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from depthguard.errors import AccessError, BackendError, UsageError

socket_option = click.option(
    "--socket", "socket_path", required=True, envvar="DEPTHGUARD_SIDECAR_SOCKET",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The sidecar's Unix socket (or $DEPTHGUARD_SIDECAR_SOCKET).",
)


@contextlib.contextmanager
def _as_usage_errors() -> Iterator[None]:
    """A refused or failed sidecar call is the caller's problem to fix: one line, exit 2."""
    try:
        yield
    except (AccessError, BackendError) as exc:
        raise UsageError(str(exc)) from exc


@click.group("sidecar", no_args_is_help=True)
def app() -> None:
    """Run the secrets sidecar (Unix-socket API) or talk to one."""


def _quick_start(store: Path, sock: Path) -> str:
    s, d = shlex.quote(str(sock)), shlex.quote(str(store))
    return f"""\
depthguard sidecar (dev mode) is ready on {sock}
  store: {store} (its key file {store / '.key'} is for development only)
  audit: {store / 'audit.jsonl'}
Try it from another shell:
  printf 's3cret' | depthguard store put db-password --store {d}
  depthguard sidecar get db-password --socket {s}
  TOKEN=$(depthguard sidecar token --socket {s})
  curl -s --unix-socket {s} -H "Authorization: Bearer $TOKEN" http://localhost/v1/secrets/db-password
  curl -s --unix-socket {s} http://localhost/v1/secrets/db-password      # no token: 401
  depthguard audit verify {shlex.quote(str(store / 'audit.jsonl'))}
Stop with Ctrl-C.
"""


@app.command("run")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Sidecar configuration (YAML).")
@click.option("--dev", is_flag=True, help="No config file: a local encrypted store, every secret granted to "
              "the uid running the sidecar.")
@click.option("--store", "store_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="--dev's store directory (default: a new temporary directory).")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Listen here instead of the configured socket (--dev: STORE/sidecar.sock).")
def run(config_file: Path | None, dev: bool, store_dir: Path | None, socket_path: Path | None) -> None:
    """Serve the sidecar API on a Unix socket until SIGTERM/SIGINT (SIGHUP reloads the config)."""
    from sidecar.config import SidecarConfig, dev_config, load_config
    from sidecar.jsonlog import setup_logging
    from sidecar.server import SidecarServer

    if dev and config_file is not None:
        raise UsageError("--dev and --config cannot be combined")
    if store_dir is not None and not dev:
        raise UsageError("--store is for --dev (a config file names its backends)")
    if not dev and config_file is None:
        raise UsageError("give --config FILE, or --dev for a development sidecar")
    setup_logging()
    load: Callable[[], SidecarConfig]
    if dev:
        store = store_dir or Path(tempfile.mkdtemp(prefix="depthguard-dev-"))
        store.mkdir(mode=0o700, parents=True, exist_ok=True)

        def load() -> SidecarConfig:
            return dev_config(store, socket=socket_path)

        server = SidecarServer(load(), load=load, dev_refresh=load)

        def announce() -> None:
            if server.ready.wait():
                sys.stdout.write(_quick_start(store, server.socket_path))
                sys.stdout.flush()

        threading.Thread(target=announce, daemon=True).start()
    else:
        assert config_file is not None
        path = config_file

        def load() -> SidecarConfig:
            cfg = load_config(path)
            if socket_path is None:
                return cfg
            return cfg.model_copy(update={"listen": cfg.listen.model_copy(update={"socket": socket_path})})

        server = SidecarServer(load(), load=load)
    server.serve()


@app.command("token")
@click.option("--role", default=None, help="Needed only when this uid may use several roles.")
@socket_option
def token(role: str | None, socket_path: Path) -> None:
    """Print a token for the calling uid (one line)."""
    from sidecar.client import SidecarClient

    with _as_usage_errors(), SidecarClient(socket_path, role=role) as client:
        click.echo(client.token())


@app.command("get")
@click.argument("name")
@socket_option
def get(name: str, socket_path: Path) -> None:
    """Write secret NAME's value to stdout exactly (no newline is added)."""
    from sidecar.client import SidecarClient

    with _as_usage_errors(), SidecarClient(socket_path) as client:
        value = client.get(name)
    out = sys.stdout.buffer
    out.write(value)
    out.flush()


@app.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--config", "config_file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for every secret before giving up.")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(config_file: Path, timeout: float, argv: tuple[str, ...]) -> None:
    """Run CMD ARGS with every configured secret in its environment: `sidecar exec --config F -- CMD ARGS`.

    Waits for every secret, forwards signals, and exits with the command's exit code."""
    from sidecar.config import load_config
    from sidecar.envexec import run_with_secrets

    code = run_with_secrets(load_config(config_file), list(argv), timeout=timeout)
    raise click.exceptions.Exit(code)
