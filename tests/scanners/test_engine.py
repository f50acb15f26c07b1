"""Engine behaviour: prefilter equivalence, linear time on hostile input, decoding, allow comments."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from scanners.decode import prepare
from scanners.engine import Engine
from scanners.finding import Finding, fingerprint, redact
from scanners.rulepack import builtin_rules
from scanners.validators import base62_crc32

RNG = random.Random(1234)
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def gh_token(prefix: str = "ghp") -> str:
    body = "".join(RNG.choice(ALNUM) for _ in range(30)).encode()
    return f"{prefix}_{(body + base62_crc32(body)).decode()}"


def key(findings: list[Finding]) -> list[tuple[str, int, int, int, str]]:
    return sorted((f.rule_id, f.line, f.column, f.end_column, f.fingerprint) for f in findings)


def _mixed_corpus() -> list[bytes]:
    """Every example of the pack, alone, all together in one file, and buried in filler code."""
    examples = [e for r in builtin_rules() for e in (*r.positive, *r.negative)]
    filler = [
        "def handler(event, context):",
        "    return {'statusCode': 200, 'body': json.dumps(event)}",
        "x = [i * 2 for i in range(100)]  # a comment with = signs == and keys",
        "const config = { retries: 3, timeout: 5000, url: 'https://example.org/api' };",
    ]
    docs = [e.encode() for e in examples]
    docs.append("\n".join(examples).encode())
    mixed: list[str] = []
    for e in examples:
        mixed.extend(RNG.sample(filler, 2))
        mixed.append(e)
    docs.append("\n".join(mixed).encode())
    docs.append("\r\n".join(examples).encode())
    return docs


def test_hyperscan_and_keyword_prefilters_give_identical_findings(
    hs_engine: Engine, python_engine: Engine
) -> None:
    total = 0
    for i, doc in enumerate(_mixed_corpus()):
        a, b = hs_engine.scan(doc, f"doc{i}"), python_engine.scan(doc, f"doc{i}")
        assert key(a) == key(b), f"document {i} differs"
        total += len(a)
    assert total > 100  # the corpus really exercises the rules


def test_finding_location_and_redaction(engine: Engine) -> None:
    token = gh_token()
    doc = f"line one\n  token = '{token}'\n".encode()
    (f,) = [f for f in engine.scan(doc, "cfg.py") if f.rule_id == "github-pat-classic"]
    assert (f.line, f.column, f.end_column) == (2, 12, 12 + len(token))
    assert f.path == "cfg.py" and f.secret == token
    assert f.fingerprint == fingerprint(token)
    out = f.to_dict()
    assert token not in str(out) and out["secret"] == redact(token)
    assert f.to_dict(show_secrets=True)["secret"] == token


def test_stable_id_ignores_line_moves(engine: Engine) -> None:
    token = gh_token()
    a = engine.scan(f"t = '{token}'".encode(), "a.py")[0]
    b = engine.scan(f"\n\n\n    t = '{token}'".encode(), "a.py")[0]
    assert a.line != b.line and a.id == b.id


@pytest.mark.parametrize(
    "comment",
    ["# depthguard:allow", "# pragma: allowlist secret", "// gitleaks:allow", "# trufflehog:ignore"],
)
def test_inline_allow_comments(engine: Engine, comment: str) -> None:
    token = gh_token()
    assert engine.scan(f"t = '{token}'".encode())
    assert not engine.scan(f"t = '{token}'  {comment}".encode())


def test_allow_next_line_marker(engine: Engine) -> None:
    token = gh_token()
    assert not engine.scan(f"# pragma: allowlist nextline secret\nt = '{token}'".encode())


def test_utf16_latin1_and_minified_inputs(engine: Engine) -> None:
    token = gh_token()
    line = f"token = '{token}'\n"
    for raw in (
        b"\xff\xfe" + line.encode("utf-16-le"),
        b"\xfe\xff" + line.encode("utf-16-be"),
        line.encode("utf-16-le"),  # no BOM, as some Windows tools write it
        b"caf\xe9 = 1; " + line.encode(),  # latin-1 byte before the secret
    ):
        data = prepare(raw)
        assert data is not None
        assert [f.secret for f in engine.scan(data)] == [token]
    minified = ("var a=" + ";".join(f"f{i}=function(){{return {i}}}" for i in range(20000))).encode()
    minified += f";var t='{token}';".encode()
    (f,) = engine.scan(minified, "app.min.js")
    assert f.line == 1 and f.column == len(minified) - len(token) - 1


def test_binary_files_are_skipped() -> None:
    assert prepare(b"\x7fELF\x02\x01\x01\x00" + gh_token().encode()) is None
    assert prepare(b"plain text") == b"plain text"


def _best_time(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _b64_run(n: int) -> bytes:
    alphabet = (ALNUM + "+/").encode()
    return bytes(RNG.choice(alphabet) for _ in range(n))


PATHOLOGICAL: dict[str, Callable[[int], bytes]] = {
    "long-base64-run": _b64_run,
    "repeated-a-equals": lambda n: b"a=" * (n // 2),
    "repeated-password-assign": lambda n: b'password="' * (n // 10),
    "spaces-then-key": lambda n: b"api_key" + b" " * (n - 7),
    "repeated-url-userinfo": lambda n: b"postgres://u:" * (n // 13),
    "repeated-jwt-prefix": lambda n: b"eyJhbGciOi." * (n // 11),
    "pem-header-spam": lambda n: b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n" * (n // 37),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_time_grows_at_most_linearly(engine: Engine, name: str) -> None:
    """4x the input may cost about 4x the time; quadratic backtracking would cost 16x."""
    small, large = PATHOLOGICAL[name](1 << 20), PATHOLOGICAL[name](4 << 20)
    runs = 3 if engine.backend == "hyperscan" else 1  # the pure-Python fallback is slow by design
    t_small = _best_time(lambda: engine.scan(small), runs)
    t_large = _best_time(lambda: engine.scan(large), runs)
    floor = 0.002  # below this, timer noise dominates the ratio
    ratio = t_large / max(t_small, floor)
    assert ratio < 8.0, f"{name}: 1 MB {t_small:.3f}s, 4 MB {t_large:.3f}s, ratio {ratio:.1f}"
