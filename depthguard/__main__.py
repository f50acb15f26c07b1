"""``python -m depthguard`` runs the console command."""

from depthguard.cli import main

main()
