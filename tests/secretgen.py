"""Synthetic, format-correct secrets for tests: generated, never real."""

from __future__ import annotations

import random
import string

from scanners.validators import base62_crc32

_RNG = random.Random(20261121)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def github_token(prefix: str = "ghp") -> str:
    body = rand(30).encode()
    return f"{prefix}_{(body + base62_crc32(body)).decode()}"
