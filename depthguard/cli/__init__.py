"""The ``depthguard`` console command: thin typer wiring; errors become messages only here."""

from depthguard.cli.main import main

__all__ = ["main"]
