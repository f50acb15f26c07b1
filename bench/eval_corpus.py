"""Score secret scanners against the labeled corpus from ``corpus_gen.py``.

Why: "does the detector work?" needs a number, and a number only means something next to a baseline.
This runs depthguard (CLI, or the in-process engine while the CLI is not there yet) and, when they are on
PATH, gitleaks and detect-secrets on the same files, and prints TP/FP/FN, precision, recall and F1 for
each, plus depthguard's per-family recall and its misses and false alarms.

Matching rule (documented because it decides the numbers): a finding matches a label when it is in the
same file and the labeled secret is contained in the reported one, or the reported one is contained in
the label and covers at least half of it (so a tool that reports only a fragment does not score); when
a tool reports no secret (detect-secrets), the same line is enough. Whitespace and literal ``\\n`` are
ignored when comparing, so a PEM block matches its body. A label is a TP once; extra findings of an
already-found secret are duplicates, neither TP nor FP. Findings in the corpus' own ``labels.json`` /
``decoys.json`` are ignored.

Output never contains a secret: FNs and FPs show path:line, family or rule id, and a redacted value.

Usage: ``python bench/eval_corpus.py [--corpus DIR] [--scale 1.0] [--json] [--depthguard MODE]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import corpus_gen  # bench/ is on sys.path when run as a script; tests add it themselves

TIMEOUT = 900  # seconds per tool run: a hung scanner must not hang the benchmark


@dataclass(frozen=True)
class Found:
    """One finding, normalised across tools. ``secret`` is None when the tool does not report it."""

    path: str
    line: int
    secret: str | None
    rule: str


@dataclass
class Score:
    tool: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    duplicates: int = 0
    family_total: dict[str, int] = field(default_factory=dict)
    family_found: dict[str, int] = field(default_factory=dict)
    fp_classes: dict[str, int] = field(default_factory=dict)
    fns: list[dict[str, Any]] = field(default_factory=list)
    fps: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def family_recall(self) -> dict[str, float]:
        return {f: self.family_found.get(f, 0) / n for f, n in sorted(self.family_total.items())}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            precision=round(self.precision, 4),
            recall=round(self.recall, 4),
            f1=round(self.f1, 4),
            family_recall={k: round(v, 4) for k, v in self.family_recall().items()},
        )
        return d


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+|\\n")


def _norm(s: str) -> str:
    return _WS.sub("", s).strip("'\"`")


def redact(secret: str | None) -> str:
    """Enough to recognise a value you already know, never enough to use it."""
    if not secret:
        return ""
    n = len(secret)
    if n >= 20:
        return f"{secret[:4]}…{secret[-4:]}"
    if n >= 12:
        return f"{secret[:2]}…{secret[-2:]}"
    return "…"


def _decoded(label: str) -> str | None:
    """The text a base64 label stands for (k8s ``data:``, docker ``auth``): tools that decode report it."""
    if len(label) < 8 or len(label) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", label):
        return None
    try:
        text = base64.b64decode(label, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text if text.isprintable() and len(text) >= 6 else None


def same_secret(label: str, reported: str) -> bool:
    """Label inside the report, or the report a substantial part of the label (or of its decoding)."""
    rep = _norm(reported)
    if not rep:
        return False
    for variant in (label, _decoded(label)):
        lab = _norm(variant) if variant else ""
        if lab and (lab in rep or (rep in lab and len(rep) * 2 >= len(lab))):
            return True
    return False


def load_labels(corpus: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    labels = json.loads((corpus / corpus_gen.LABELS_FILE).read_text(encoding="utf-8"))
    decoys_path = corpus / corpus_gen.DECOYS_FILE
    decoys = json.loads(decoys_path.read_text(encoding="utf-8")) if decoys_path.exists() else []
    return labels, decoys


def _fp_class(f: Found, decoys: list[dict[str, Any]]) -> str:
    """Name the planted negative a false alarm hit, so FP classes can be counted."""
    for d in decoys:
        if f.secret and d["value"] and same_secret(d["value"], f.secret):
            return str(d["kind"])
    for d in decoys:
        if d["line"] == f.line:
            return str(d["kind"])
    return "unplanted"


def score(
    tool: str,
    labels: list[dict[str, Any]],
    findings: Iterable[Found],
    decoys: list[dict[str, Any]] | None = None,
) -> Score:
    """Match findings to labels (see the module docstring) and count."""
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_path[lab["path"]].append(i)
    decoys_by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in decoys or []:
        decoys_by_path[d["path"]].append(d)
    matched: set[int] = set()
    sc = Score(tool)
    seen: set[tuple[str, int, str]] = set()
    for f in findings:
        if f.path in corpus_gen.META_FILES:
            continue
        key = (f.path, f.line, _norm(f.secret) if f.secret else "")
        if key in seen:
            continue
        seen.add(key)
        cands = by_path.get(f.path, [])
        if f.secret:
            hits = [i for i in cands if same_secret(labels[i]["secret"], f.secret)]
        else:
            hits = [i for i in cands if labels[i]["line"] == f.line]
        if not hits:
            sc.fp += 1
            cls = _fp_class(f, decoys_by_path.get(f.path, []))
            sc.fp_classes[cls] = sc.fp_classes.get(cls, 0) + 1
            sc.fps.append(
                {"path": f.path, "line": f.line, "rule": f.rule, "class": cls, "secret": redact(f.secret)}
            )
            continue
        fresh = [i for i in hits if i not in matched]
        if not fresh:
            sc.duplicates += 1
            continue
        matched.add(min(fresh, key=lambda i: abs(labels[i]["line"] - f.line)))
    for i, lab in enumerate(labels):
        fam = lab["family"]
        sc.family_total[fam] = sc.family_total.get(fam, 0) + 1
        if i in matched:
            sc.family_found[fam] = sc.family_found.get(fam, 0) + 1
        else:
            sc.fns.append(
                {"path": lab["path"], "line": lab["line"], "family": fam, "secret": redact(lab["secret"])}
            )
    sc.tp = len(matched)
    sc.fn = len(labels) - sc.tp
    sc.fps.sort(key=lambda x: (x["class"], x["path"], x["line"]))
    sc.fns.sort(key=lambda x: (x["family"], x["path"], x["line"]))
    return sc


# --------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(
        p
        for p in corpus.rglob("*")
        if p.is_file() and not (p.parent == corpus and p.name in corpus_gen.META_FILES)
    )


def _rel(corpus: Path, p: str) -> str:
    path = Path(p)
    if not path.is_absolute():
        if (corpus / path).exists():
            return path.as_posix()
        path = path.resolve()
    try:
        return path.resolve().relative_to(corpus.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def scan_inprocess(corpus: Path) -> list[Found]:
    """depthguard's engine, called directly: what the quality test uses, and the fallback while the
    ``scan dir`` command is being written."""
    from scanners.engine import Engine
    from scanners.rulepack import builtin_rules

    engine = Engine(builtin_rules())
    out: list[Found] = []
    for p in corpus_files(corpus):
        rel = p.relative_to(corpus).as_posix()
        for f in engine.scan(p.read_bytes(), rel):
            out.append(Found(rel, f.line, f.secret, f.rule_id))
    return out


def depthguard_cli_available() -> bool:
    exe = shutil.which("depthguard")
    if not exe:
        return False
    r = subprocess.run(
        [exe, "scan", "dir", "--help"], capture_output=True, timeout=TIMEOUT, text=True, check=False
    )
    return r.returncode == 0


def scan_depthguard_cli(corpus: Path) -> list[Found]:
    r = subprocess.run(
        [
            "depthguard",
            "scan",
            "dir",
            str(corpus),
            "--format",
            "json",
            "--show-secrets",
            "--exit-zero",
            "--no-progress",
        ],
        capture_output=True,
        timeout=TIMEOUT,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"depthguard exited {r.returncode}: {r.stderr.strip()[-400:]}")
    data = json.loads(r.stdout)
    items = data if isinstance(data, list) else data.get("findings", data.get("results", []))
    return [
        Found(
            _rel(corpus, str(x.get("path", ""))),
            int(x.get("line", 0)),
            x.get("secret"),
            str(x.get("rule_id", "")),
        )
        for x in items
    ]


def scan_gitleaks(corpus: Path) -> list[Found]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "gitleaks.json"
        r = subprocess.run(
            [
                "gitleaks",
                "dir",
                str(corpus),
                "--report-format",
                "json",
                "--report-path",
                str(report),
                "--no-banner",
                "--exit-code",
                "0",
                "--log-level",
                "error",
            ],
            capture_output=True,
            timeout=TIMEOUT,
            text=True,
            check=False,
        )
        if r.returncode != 0 or not report.exists():
            raise RuntimeError(f"gitleaks exited {r.returncode}: {r.stderr.strip()[-400:]}")
        items = json.loads(report.read_text(encoding="utf-8") or "[]")
    return [
        Found(_rel(corpus, x["File"]), int(x["StartLine"]), x.get("Secret") or None, x.get("RuleID", ""))
        for x in items
    ]


def scan_detect_secrets(corpus: Path) -> list[Found]:
    r = subprocess.run(
        ["detect-secrets", "scan", "--all-files", "."],
        cwd=corpus,
        capture_output=True,
        timeout=TIMEOUT,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"detect-secrets exited {r.returncode}: {r.stderr.strip()[-400:]}")
    data = json.loads(r.stdout)
    out = []
    for path, items in data.get("results", {}).items():
        for x in items:
            out.append(Found(_rel(corpus, path), int(x["line_number"]), None, x.get("type", "")))
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def print_report(
    scores: list[Score], corpus_info: dict[str, Any], detail: str = "depthguard", limit: int = 60
) -> None:
    print(
        f"corpus: {corpus_info['files']} files, {corpus_info['positives']} positives, "
        f"{corpus_info['negatives']} planted negatives ({corpus_info['dir']})\n"
    )
    print(f"{'tool':<24} {'TP':>5} {'FP':>5} {'FN':>5} {'prec':>7} {'recall':>7} {'F1':>7}")
    for s in scores:
        if s.note and not s.tp and not s.fp:
            print(f"{s.tool:<24} skipped: {s.note}")
            continue
        print(
            f"{s.tool:<24} {s.tp:>5} {s.fp:>5} {s.fn:>5} {s.precision:>7.3f} {s.recall:>7.3f} {s.f1:>7.3f}"
            + (f"   ({s.note})" if s.note else "")
        )
    ran = [s for s in scores if s.tp or s.fp or not s.note]
    if not ran:
        return
    families = sorted(ran[0].family_total)
    print("\nper-family recall (n = labeled secrets)")
    print(f"{'family':<16} {'n':>4} " + " ".join(f"{s.tool[:14]:>14}" for s in ran))
    for fam in families:
        n = ran[0].family_total[fam]
        print(f"{fam:<16} {n:>4} " + " ".join(f"{s.family_found.get(fam, 0) / n:>14.2f}" for s in ran))
    for s in ran:
        if not s.tool.startswith(detail):
            continue
        print(
            f"\n{s.tool}: false-positive classes: "
            + ", ".join(f"{k}={v}" for k, v in sorted(s.fp_classes.items(), key=lambda kv: -kv[1]))
        )
        fn_fams = Counter(x["family"] for x in s.fns)
        print(
            f"{s.tool}: false negatives by family: " + ", ".join(f"{k}={v}" for k, v in fn_fams.most_common())
        )
        print(f"\n{s.tool}: false negatives ({len(s.fns)})")
        for x in s.fns[:limit]:
            print(f"  FN {x['path']}:{x['line']}  family={x['family']}  {x['secret']}")
        if len(s.fns) > limit:
            print(f"  ... {len(s.fns) - limit} more (use --json or --limit)")
        print(f"\n{s.tool}: false positives ({len(s.fps)})")
        for x in s.fps[:limit]:
            print(f"  FP {x['path']}:{x['line']}  rule={x['rule']}  class={x['class']}  {x['secret']}")
        if len(s.fps) > limit:
            print(f"  ... {len(s.fps) - limit} more (use --json or --limit)")


def evaluate(corpus: Path, mode: str = "auto", others: bool = True) -> tuple[list[Score], dict[str, Any]]:
    labels, decoys = load_labels(corpus)
    info = {
        "dir": str(corpus),
        "files": len(corpus_files(corpus)),
        "positives": len(labels),
        "negatives": len(decoys),
    }
    scores: list[Score] = []
    use_cli = mode == "cli" or (mode == "auto" and depthguard_cli_available())
    if use_cli:
        scores.append(score("depthguard", labels, scan_depthguard_cli(corpus), decoys))
    else:
        s = score("depthguard (in-process)", labels, scan_inprocess(corpus), decoys)
        if mode == "auto":
            s.note = "CLI `scan dir` unavailable, used the engine"
        scores.append(s)
    if others:
        for name, fn in (("gitleaks", scan_gitleaks), ("detect-secrets", scan_detect_secrets)):
            if not shutil.which(name):
                scores.append(Score(name, note="not on PATH"))
                continue
            try:
                scores.append(score(name, labels, fn(corpus), decoys))
            except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                scores.append(Score(name, note=f"failed: {e}"))
    return scores, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Score depthguard (and gitleaks/detect-secrets) on the labeled corpus."
    )
    ap.add_argument("--corpus", type=Path, help="existing corpus dir (default: generate into a temp dir)")
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size when generating")
    ap.add_argument("--seed", type=int, default=corpus_gen.SEED)
    ap.add_argument("--depthguard", choices=("auto", "cli", "inprocess"), default="auto")
    ap.add_argument("--only-depthguard", action="store_true", help="skip gitleaks and detect-secrets")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--limit", type=int, default=60, help="max FNs/FPs listed per kind")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dg-corpus-") as tmp:
        corpus = a.corpus
        if corpus is None:
            corpus = Path(tmp) / "corpus"
            corpus_gen.generate(corpus, a.scale, a.seed)
        scores, info = evaluate(corpus.resolve(), a.depthguard, not a.only_depthguard)
        if a.json:
            json.dump({"corpus": info, "tools": {s.tool: s.to_dict() for s in scores}}, sys.stdout, indent=2)
            print()
        else:
            print_report(scores, info, limit=a.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
