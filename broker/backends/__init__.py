"""Secret backends: one module per provider behind ``interface.SecretBackend``."""
