"""Entry point: builds the typer app and maps the exception tree to exit codes.

Exit codes (design.md): 0 clean, 1 findings, 2 usage or input error, 3 internal error.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from depthguard.cli import baseline_cmd, rules_cmd, scan_cmd
from depthguard.errors import ConfigError, DepthguardError, ReportError, RuleError, SourceError, UsageError

app = typer.Typer(
    name="depthguard",
    help="Secrets broker sidecar and credential-leak detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(scan_cmd.app, name="scan")
app.add_typer(baseline_cmd.app, name="baseline")
app.add_typer(rules_cmd.app, name="rules")

_USER_ERRORS = (UsageError, ConfigError, SourceError, ReportError, RuleError)


def main() -> None:
    try:
        # standalone_mode=False: click returns the exit code of typer.Exit instead of exiting, and
        # lets our exceptions through so they are mapped below instead of printed as tracebacks.
        rc = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("depthguard: interrupted", file=sys.stderr)
        sys.exit(130)
    except _USER_ERRORS as exc:
        print(f"depthguard: {exc}", file=sys.stderr)
        sys.exit(2)
    except DepthguardError as exc:
        print(f"depthguard: {exc}", file=sys.stderr)
        sys.exit(3)
    except TyperException as exc:  # click usage errors (typer vendors click) in standalone_mode=False
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"depthguard: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        print(f"depthguard: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)
    sys.exit(rc if isinstance(rc, int) else 0)
