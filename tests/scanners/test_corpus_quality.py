"""Quality gate: depthguard's built-in rules must reach precision and recall >= 0.95 on a small slice of
the labeled corpus (``bench/corpus_gen.py``).

Why a test and not only the benchmark: a rule change that quietly drops a family or starts flagging
dummy passwords should fail CI, not wait for someone to run ``bench/eval_corpus.py``. The corpus is built
independently of the rules, so this measures them rather than restating them. It runs the in-process
engine (no CLI, no subprocess); building the Hyperscan database makes it take more than 5 s, hence the
``integration`` mark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import corpus_gen  # noqa: E402
import eval_corpus  # noqa: E402

SCALE = 0.2  # ~90 files, ~100 positives: big enough that one miss is 1%, small enough to run in seconds
THRESHOLD = 0.95


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> eval_corpus.Score:
    corpus = tmp_path_factory.mktemp("corpus")
    labels, decoys = corpus_gen.generate(corpus, scale=SCALE)
    assert len(labels) >= 60, "the small corpus lost its positives; the gate would be meaningless"
    found = eval_corpus.scan_inprocess(corpus)
    return eval_corpus.score("depthguard", [vars(x) for x in labels], found, [vars(x) for x in decoys])


def _summary(s: eval_corpus.Score) -> str:
    fns = "\n".join(f"  FN {x['path']}:{x['line']} {x['family']}" for x in s.fns[:25])
    fps = "\n".join(f"  FP {x['path']}:{x['line']} {x['rule']} ({x['class']})" for x in s.fps[:25])
    return f"TP={s.tp} FP={s.fp} FN={s.fn} precision={s.precision:.3f} recall={s.recall:.3f}\n{fns}\n{fps}"


@pytest.mark.integration
def test_recall(result: eval_corpus.Score) -> None:
    assert result.recall >= THRESHOLD, _summary(result)


@pytest.mark.integration
def test_precision(result: eval_corpus.Score) -> None:
    assert result.precision >= THRESHOLD, _summary(result)


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """Same seed and scale, same bytes: otherwise numbers from two runs cannot be compared."""
    a, b = tmp_path / "a", tmp_path / "b"
    corpus_gen.generate(a, scale=0.05)
    corpus_gen.generate(b, scale=0.05)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in files_a)


def test_labels_point_at_their_secret(tmp_path: Path) -> None:
    """Every label's line really holds (the start of) its secret, so a miss is the scanner's fault."""
    labels, decoys = corpus_gen.generate(tmp_path, scale=0.05)
    for item in [*labels, *decoys]:
        value = item.secret if isinstance(item, corpus_gen.Label) else item.value
        lines = (tmp_path / item.path).read_text(encoding="utf-8").split("\n")
        assert value.split("\n")[0] in lines[item.line - 1], (item.path, item.line)
