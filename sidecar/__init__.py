"""The sidecar process: the HTTP API on a Unix socket with peer-credential identity, built on ``broker``."""
