"""depthguard: a secrets broker sidecar and a credential-leak detector sharing one codebase.

This package holds only what every half shares: the version, the exception tree and the CLI edge.
"""

__version__ = "0.1.0"
