"""``depthguard audit verify FILE [--heartbeat 30s]``: check an audit trail for tampering and silence.

Exit codes follow design.md: 0 the chain is intact and no heartbeat gap was found; 1 problems, printed
one per line (first integrity break, then every gap, in file order) followed by a summary; 2 the file
cannot be read (``SourceError``, one line on stderr via ``main``) or a bad option value.
The heartbeat interval normally comes from the file's ``start``/``heartbeat`` records; ``--heartbeat``
overrides it (for logs whose writer was configured differently from what it recorded).
"""

from __future__ import annotations

from pathlib import Path

import click

from depthguard.durations import parse_duration as _parse


def parse_duration(text: str) -> float:
    """A positive duration (``30s``, ``5m``…); ValueError otherwise."""
    seconds = _parse(text)
    if seconds <= 0:
        raise ValueError(f"the duration must be positive: {text!r}")
    return seconds


def _duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A bad value is a usage error (exit 2) with click's own message. (A callback rather than a
    ``click.ParamType`` subclass: that class became generic in click 8.2 and we support 8.1.)"""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


@click.group("audit", no_args_is_help=True)
def app() -> None:
    """Check audit trails written by the sidecar."""


@app.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--heartbeat", default=None, metavar="DURATION", callback=_duration_option,
              help="Heartbeat interval to check gaps against (default: the one the file records).")
def verify(file: Path, heartbeat: float | None) -> None:
    """Report the first broken, missing or reordered record and every heartbeat gap."""
    from broker.audit_verify import verify_file  # imported here: keeps every other command fast to start

    report = verify_file(file, heartbeat=heartbeat)  # SourceError when unreadable: exit 2 in main
    for problem in report.problems:
        click.echo(problem)
    seqs = f" (seq {report.first_seq}-{report.last_seq})" if report.records else ""
    hb = f"heartbeat {report.heartbeat:g} s" if report.heartbeat is not None else "heartbeat not checked"
    if report.ok:
        click.echo(f"{file}: {report.records} records{seqs}, chain intact, {hb}")
        return
    count = len(report.problems)
    click.echo(f"{file}: {count} problem{'' if count == 1 else 's'} in {report.records} records{seqs}, {hb}")
    raise click.exceptions.Exit(1)
