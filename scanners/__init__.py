"""The credential-leak detector: rules, engine, sources and reports.

Imports nothing from ``broker`` or ``sidecar``; every scan target reuses the same engine.
"""
