"""Structural checks for the payments and messaging rule families (``payments.toml``, ``messaging.toml``).

Pure and offline: they look only at the matched bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

from scanners.validators.core import Validator

_LOWER_HEX = re.compile(rb"^[0-9a-f]+$")


def stripe_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """Stripe keys (``sk_``/``rk_`` + live/test) are random base62, so they mix letter cases.

    A body of only lower-case hex is a Paystack key (``sk_live_`` + 40 hex), which has its own rule;
    a body with no upper-case letter at all is a hand-typed value or another vendor's id, not Stripe.
    """
    body = secret.rsplit(b"_", 1)[-1]
    if _LOWER_HEX.match(body):
        return False
    return any(65 <= c <= 90 for c in body) and any(97 <= c <= 122 for c in body)


def discord_bot_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """A Discord bot token's first segment is the base64 of the bot's snowflake id (17-20 digits).

    Random ``xxx.yyy.zzz`` strings (minified JS, session ids) almost never decode to an all-digit id.
    """
    first = secret.split(b".", 1)[0]
    padded = first + b"=" * (-len(first) % 4)
    try:
        raw = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw.isdigit() and 17 <= len(raw) <= 20


def no_publishable_context(secret: bytes, m: re.Match[bytes]) -> bool:
    """Chargebee (and others) give publishable keys the same ``live_``/``test_`` shape as secret keys;
    only the variable name tells them apart, so a match whose context says "publishable" is dropped."""
    return b"publishable" not in m.group(0).lower()


VALIDATORS: dict[str, Validator] = {
    "no-publishable-context": no_publishable_context,
    "stripe-key": stripe_key,
    "discord-bot-token": discord_bot_token,
}
