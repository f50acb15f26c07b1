"""The secrets broker library: backends, lease-aware encrypted cache, policy, tokens and audit.

A library with no web framework; it imports nothing from ``sidecar`` (the process that serves it).
"""
