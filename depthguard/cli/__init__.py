"""The ``depthguard`` console command: thin click wiring; errors become messages only here."""

from depthguard.cli.main import main

__all__ = ["main"]
