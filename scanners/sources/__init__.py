"""Scan targets: each yields chunks of bytes with a location (directory, git, image, env)."""
