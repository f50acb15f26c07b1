"""Entry point: builds the click command tree and maps the exception tree to exit codes.

Exit codes (design.md): 0 clean, 1 findings, 2 usage or input error, 3 internal error. This module
and the HTTP layer are the only places that turn exceptions into messages.
"""

from __future__ import annotations

import sys

import click

from depthguard import __version__
from depthguard.cli import audit_cmd, baseline_cmd, hook_cmd, rules_cmd, scan_cmd, sidecar_cmd, store_cmd
from depthguard.errors import ConfigError, DepthguardError, ReportError, RuleError, SourceError, UsageError

_USER_ERRORS = (UsageError, ConfigError, SourceError, ReportError, RuleError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True)
@click.version_option(__version__, prog_name="depthguard")
def app() -> None:
    """Secrets broker sidecar and credential-leak detector."""


app.add_command(scan_cmd.app)
app.add_command(baseline_cmd.app)
app.add_command(rules_cmd.app)
app.add_command(hook_cmd.app)
app.add_command(store_cmd.app)
app.add_command(audit_cmd.app)
app.add_command(sidecar_cmd.app)


def _fail(message: str, code: int) -> None:
    print(f"depthguard: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    try:
        # standalone_mode=False: click returns exit codes instead of exiting and lets our
        # exceptions through, so they are mapped here instead of printed as tracebacks.
        rc = app.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except click.ClickException as exc:  # usage errors: unknown command, bad option value
        _fail(exc.format_message(), 2)
    except _USER_ERRORS as exc:
        _fail(str(exc), 2)
    except DepthguardError as exc:
        _fail(str(exc), 3)
    except Exception as exc:
        _fail(f"internal error: {type(exc).__name__}: {exc}", 3)
    sys.exit(rc if isinstance(rc, int) else 0)
