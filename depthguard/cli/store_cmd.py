"""``depthguard store put|get|list|rm``: manage the local encrypted store from a shell.

Values travel only through stdin (``put``; a hidden, confirmed prompt on a terminal) and stdout
(``get``), never through argv, where ``ps`` and shell history would see them. ``put`` stores the bytes
exactly as read: ``echo s3cret | depthguard store put x`` stores ``s3cret\\n`` (use ``printf``), and
``get`` writes the stored bytes exactly, adding no newline. Store failures are re-raised as
``UsageError`` (one line, exit 2 via ``main``) because a wrong key or unknown name is an input error.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from broker.backends.local import (
    KEY_FILE_NAME,
    LocalStore,
    StoreError,
    resolve_key,
)
from depthguard.errors import SecretNotFound, UsageError

store_option = click.option(
    "--store", "store_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
    help="Store directory (created 0700 by 'put').",
)
key_option = click.option(
    "--key-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="32-byte key file (mode 0600 or stricter). Default: $DEPTHGUARD_STORE_KEY, else DIR/.key.",
)


@contextlib.contextmanager
def _as_usage_errors() -> Iterator[None]:
    """Translate store failures to UsageError; their messages never contain values."""
    try:
        yield
    except (StoreError, SecretNotFound) as exc:
        raise UsageError(str(exc)) from exc


def _open(store_dir: Path, key_file: Path | None, *, create: bool) -> LocalStore:
    key = resolve_key(store_dir, key_file, create=create)
    if key.created:
        click.echo(
            f"depthguard: warning: created a new store key at {store_dir / KEY_FILE_NAME}; a key kept next "
            "to the data is for development only (use --key-file or DEPTHGUARD_STORE_KEY)",
            err=True,
        )
    return LocalStore(store_dir, key.key)


def _stdin_is_tty() -> bool:
    """A terminal gets a hidden, confirmed prompt instead of an unbounded read."""
    return sys.stdin is not None and sys.stdin.isatty()


@click.group("store", no_args_is_help=True)
def app() -> None:
    """Manage the local encrypted secret store (AES-256-GCM records, one file per name)."""


@app.command("put")
@click.argument("name")
@store_option
@key_option
def put(name: str, store_dir: Path, key_file: Path | None) -> None:
    """Store NAME's next version, reading the value from stdin (never from the command line)."""
    if _stdin_is_tty():
        value = click.prompt("Value", hide_input=True, confirmation_prompt=True).encode("utf-8")
    else:
        value = sys.stdin.buffer.read()
    if not value:
        raise UsageError(f"refusing to store an empty value for {name!r} (stdin was empty)")
    with _as_usage_errors():
        store = _open(store_dir, key_file, create=True)
        version = store.put(name, value)
    click.echo(f"stored {name} version {version}", err=True)


@app.command("get")
@click.argument("name")
@store_option
@key_option
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="A kept older version.")
def get(name: str, store_dir: Path, key_file: Path | None, version: int | None) -> None:
    """Write NAME's value to stdout exactly as stored (no newline is added)."""
    with _as_usage_errors():
        got = _open(store_dir, key_file, create=False).get(name, version)
    out = sys.stdout.buffer
    out.write(got.value)
    out.flush()


@app.command("list")
@store_option
@key_option
def list_secrets(store_dir: Path, key_file: Path | None) -> None:
    """Print each name and its latest version (tab-separated); never values."""
    with _as_usage_errors():
        entries = _open(store_dir, key_file, create=False).entries()
    for e in entries:
        click.echo(f"{e.name}\t{e.version}")


@app.command("rm")
@click.argument("name")
@store_option
@key_option
def rm(name: str, store_dir: Path, key_file: Path | None) -> None:
    """Delete NAME and all its versions (the key is checked first, so a wrong key deletes nothing)."""
    with _as_usage_errors():
        store = _open(store_dir, key_file, create=False)
        store.get(name)  # authenticate before deleting
        store.delete(name)
    click.echo(f"removed {name}", err=True)
