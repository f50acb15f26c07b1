#!/usr/bin/env python3
"""Build a large, realistic, deterministic git history for the git-history scan benchmark.

Why it is built this way:

* **No network, no fixtures in the repo.** The content is the directory-benchmark corpus
  (``bench/.corpus/tree``, real Python/JSON/locale data; built as ``bench/scan_dir.py`` does when
  missing), replayed as the history of one project. The result is git-ignored under ``bench/.corpus``.
* **``git fast-import``**, fed a stream generated here: thousands of ``git commit`` calls would take
  an hour; one fast-import stream of ~12,000 commits takes a couple of minutes.
* **Deterministic**: one seeded ``random.Random``, fixed author/committer dates, and sorted inputs, so
  the same corpus and arguments give the same commit ids and every tool scans identical objects.
* **The shape of a real project**, because scanners' costs depend on it: files arrive over time
  (directory by directory), most commits make *small* edits to a skewed set of hot files (so most blob
  versions share nearly all content with an earlier one, which diff-based scanners exploit and
  blob-based ones must dedupe), some commits revert (recreating an existing blob), rename or delete
  files; work happens on interleaved feature branches merged back with merge commits, long-lived
  release branches get annotated tags, and a few feature branches are never merged.
* **Planted synthetic secrets** (random, format-correct, never real) that are added and later removed,
  including one reachable only from an unmerged branch and one only from a tag whose branch was
  deleted: a tool that scans just ``HEAD`` or just branches misses them. Their values and where they
  live are written to ``bench/.corpus/gitrepo.planted.json`` so ``bench/scan_git.py`` can check recall.
* The repository is **bare** (no work tree): every tool then reads history only, none a checkout.

Example::

    python bench/make_git_repo.py                   # ~12,000 commits into bench/.corpus/gitrepo
    python bench/make_git_repo.py --commits 3000 --out /tmp/small.git --force
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import os
import random
import shutil
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_dir import CORPUS_DIR, DEFAULT_TREE, build_corpus

DEFAULT_OUT = CORPUS_DIR / "gitrepo"
SKIP_DIRS = ("bin", "share")
"""Corpus parts no source repository commits (pip's scripts/man pages); ``*.dist-info`` also skipped."""
SKIP_SUFFIXES = (".so", ".pyc", ".dylib", ".dll")
EDIT_MAX_BYTES = 400_000
"""Files larger than this are added but never edited (a real project rarely churns multi-MB data)."""
START_TIME = 1_420_070_400  # 2015-01-01T00:00:00Z
AUTHORS = [
    ("Alice Moreau", "alice@example.org"),
    ("Bo Lindqvist", "bo@example.org"),
    ("Chidi Okafor", "chidi@example.org"),
    ("Dana Kowalski", "dana@example.org"),
    ("Emeka Obi", "emeka@example.org"),
    ("Fatima Haddad", "fatima@example.org"),
    ("Gustavo Lima", "gustavo@example.org"),
    ("Hana Sato", "hana@example.org"),
    ("Ivan Petrov", "ivan@example.org"),
    ("Jun Park", "jun@example.org"),
    ("release-bot", "bot@example.org"),
]
VERBS = ["Fix", "Refactor", "Add", "Update", "Tidy", "Handle", "Document", "Optimize", "Simplify", "Test"]
TOPICS = [
    "edge case in parser",
    "error message",
    "type hints",
    "caching",
    "deprecation warning",
    "unicode handling",
    "config loading",
    "logging",
    "docstring",
    "flaky test",
    "performance regression",
    "thread safety",
    "retry logic",
    "validation",
]
COMMENT = {".py": b"#", ".sh": b"#", ".toml": b"#", ".cfg": b"#", ".txt": b"#", ".js": b"//", ".css": b"/*"}


# ------------------------------------------------------------------------------------ planted secrets


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _base62(n: int, width: int) -> str:
    digits = string.digits + string.ascii_uppercase + string.ascii_lowercase
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = digits[r] + out
    return out.rjust(width, "0")


def make_secrets(rng: random.Random) -> dict[str, str]:
    """Random, format-correct credentials (GitHub tokens carry their real CRC32 check digits)."""
    body = _alnum(rng, 30)
    pem = "\n".join(_alnum(rng, 64, string.ascii_letters + string.digits + "+/") for _ in range(25))
    return {
        "aws_access_key_id": "AKIA" + _alnum(rng, 16, string.ascii_uppercase + "234567"),
        "aws_secret_access_key": _alnum(rng, 40, string.ascii_letters + string.digits + "+/"),
        "github_pat": "ghp_" + body + _base62(binascii.crc32(body.encode()), 6),
        "slack_bot_token": f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-"
        + _alnum(rng, 24),
        "stripe_live_key": "sk_live_" + _alnum(rng, 24),
        "gitlab_pat": "glpat-" + _alnum(rng, 20, string.ascii_letters + string.digits + "_-"),
        "slack_webhook": f"https://hooks.slack.com/services/T{_alnum(rng, 8, string.ascii_uppercase)}/"
        f"B{_alnum(rng, 10, string.ascii_uppercase)}/{_alnum(rng, 24)}",
        "private_key": f"-----BEGIN RSA PRIVATE KEY-----\n{pem}\n-----END RSA PRIVATE KEY-----",
    }


def secret_file(kind: str, s: dict[str, str]) -> tuple[str, bytes, list[str]]:
    """(path, content, secret values) for one planted leak, written the way people really leak them."""
    if kind == "aws":
        text = (
            '"""Local overrides -- do not commit."""\nDEBUG = True\n'
            f'AWS_ACCESS_KEY_ID = "{s["aws_access_key_id"]}"\n'
            f'AWS_SECRET_ACCESS_KEY = "{s["aws_secret_access_key"]}"\nAWS_REGION = "eu-west-1"\n'
        )
        return "config/settings_local.py", text.encode(), [s["aws_access_key_id"], s["aws_secret_access_key"]]
    if kind == "github":
        text = f'#!/bin/sh\nset -eu\nexport GITHUB_TOKEN={s["github_pat"]}\ngh release create "$1"\n'
        return "scripts/release.sh", text.encode(), [s["github_pat"]]
    if kind == "slack":
        text = f'import os\n\nSLACK_BOT_TOKEN = os.environ.get("SLACK_BOT_TOKEN", "{s["slack_bot_token"]}")\n'
        return "tools/notify_slack.py", text.encode(), [s["slack_bot_token"]]
    if kind == "stripe":
        text = f'payments:\n  provider: stripe\n  api_key: "{s["stripe_live_key"]}"\n  currency: EUR\n'
        return "deploy/payments.yaml", text.encode(), [s["stripe_live_key"]]
    if kind == "gitlab":
        text = f'[ci]\nurl = "https://gitlab.example.org"\ntoken = "{s["gitlab_pat"]}"\n'
        return "ci/gitlab.toml", text.encode(), [s["gitlab_pat"]]
    if kind == "webhook":
        text = f'{{\n  "alerts": {{\n    "slack_webhook_url": "{s["slack_webhook"]}"\n  }}\n}}\n'
        return "ops/alerts.json", text.encode(), [s["slack_webhook"]]
    if kind == "pem":
        return "deploy/keys/id_rsa", (s["private_key"] + "\n").encode(), [s["private_key"].splitlines()[1]]
    raise ValueError(kind)


# -------------------------------------------------------------------------------------- the history


@dataclass
class Entry:
    """One file in a branch's tree: its blob mark and, when editable, its content."""

    mark: int
    content: bytes | None
    mode: str = "100644"
    weight: float = 1.0
    """Popularity: how often this file attracts edits (a few hot files get most of them)."""


@dataclass
class Branch:
    """A branch being written: its tree, head commit mark, and what changed since it forked."""

    ref: str
    files: dict[str, Entry]
    head: int | None = None
    touched: set[str] = field(default_factory=set)
    planned: int = 0
    """Commits left before a feature branch is merged (-1: never merged)."""
    previous: dict[str, bytes] = field(default_factory=dict)
    """The content each path had before its last edit, for revert commits."""


class Builder:
    """Writes the fast-import stream: blobs (deduplicated by content) and commits."""

    def __init__(self, out: IO[bytes], rng: random.Random, commits: int) -> None:
        self.out, self.rng, self.target = out, rng, commits
        self.next_mark = 1
        self.blob_marks: dict[bytes, int] = {}
        self.commits = 0
        self.clock = START_TIME
        self.seconds_per_commit = (10 * 365 * 86400) // max(1, commits)  # ten years of history
        self.recent: list[str] = []

    def _mark(self) -> int:
        self.next_mark += 1
        return self.next_mark - 1

    def blob(self, data: bytes) -> int:
        """The mark of a blob with this content, emitting it only the first time it is seen."""
        key = hashlib.sha1(data).digest()
        mark = self.blob_marks.get(key)
        if mark is None:
            mark = self._mark()
            self.blob_marks[key] = mark
            self.out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
            self.out.write(data)
            self.out.write(b"\n")
        return mark

    def commit(
        self,
        br: Branch,
        message: str,
        changes: list[tuple[str, str, Entry | None]],
        merge: int | None = None,
    ) -> int:
        """Emit one commit on ``br``; ``changes`` are ("M", path, entry), ("D", path, None)."""
        mark = self._mark()
        self.clock += self.rng.randrange(self.seconds_per_commit // 4, self.seconds_per_commit * 2)
        name, email = self.rng.choice(AUTHORS[:-1] if merge is None else AUTHORS)
        msg = message.encode()
        w = self.out.write
        w(b"commit %s\nmark :%d\n" % (br.ref.encode(), mark))
        w(b"author %s <%s> %d +0000\n" % (name.encode(), email.encode(), self.clock - 600))
        w(b"committer %s <%s> %d +0000\n" % (name.encode(), email.encode(), self.clock))
        w(b"data %d\n%s\n" % (len(msg), msg))
        if br.head is not None:
            w(b"from :%d\n" % br.head)
        if merge is not None:
            w(b"merge :%d\n" % merge)
        for op, path, entry in changes:
            if op == "M":
                assert entry is not None
                w(b"M %s :%d %s\n" % (entry.mode.encode(), entry.mark, path.encode()))
            else:
                w(b"D %s\n" % path.encode())
        w(b"\n")
        br.head = mark
        self.commits += 1
        return mark

    def tag(self, name: str, target: int, message: str) -> None:
        """An annotated tag, as release tooling makes them."""
        msg = message.encode()
        self.out.write(
            b"tag %s\nfrom :%d\ntagger release-bot <bot@example.org> %d +0000\ndata %d\n%s\n"
            % (name.encode(), target, self.clock, len(msg), msg)
        )

    # -------------------------------------------------------------------------------- edit operations

    def _pick(self, br: Branch) -> str | None:
        """A file to edit: often one edited recently (hot spots), else popular, smaller files."""
        if self.recent and self.rng.random() < 0.35:
            path = self.rng.choice(self.recent)
            if path in br.files and br.files[path].content is not None:
                return path
        paths = list(br.files)
        cands = [p for p in (self.rng.choice(paths) for _ in range(8)) if br.files[p].content is not None]
        if not cands:
            return None
        weights = [br.files[p].weight / (1 + len(br.files[p].content or b"") / 100_000) for p in cands]
        return self.rng.choices(cands, weights)[0]

    def edit(self, path: str, data: bytes, serial: int) -> bytes:
        """A small, plausible change: insert, change or delete a few lines."""
        lines = data.split(b"\n")
        rng = self.rng
        i = rng.randrange(len(lines))
        cmt = COMMENT.get(os.path.splitext(path)[1], b"#")
        roll = rng.random()
        if roll < 0.45 or len(lines) < 20:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            new = [
                indent
                + cmt
                + b" %s (%d): %s" % (rng.choice(VERBS).encode(), serial, rng.choice(TOPICS).encode())
            ]
            if rng.random() < 0.5:  # copy a nearby line with a tweak, like real code growth
                src = lines[min(len(lines) - 1, i + 1)]
                new.append(src.replace(b"1", b"2", 1) if b"1" in src else src + b" ")
            lines[i:i] = new
        elif roll < 0.8:
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(lines))
                line = lines[j]
                if any(c in line for c in b"0123456789"):
                    k = next(n for n, c in enumerate(line) if c in b"0123456789")
                    lines[j] = line[:k] + str(rng.randrange(10)).encode() + line[k + 1 :]
                else:
                    lines[j] = line.rstrip() + b" " + cmt + b" r%d" % serial
        else:
            del lines[i : i + rng.randint(1, 4)]
        return b"\n".join(lines)


def load_corpus(tree: Path) -> list[Path]:
    """Corpus files in directory order (a project grows package by package), minus non-source parts."""
    out: list[Path] = []
    for dirpath, dirs, names in os.walk(tree):
        rel = Path(dirpath).relative_to(tree)
        if rel.parts and (rel.parts[0] in SKIP_DIRS or rel.parts[0].endswith(".dist-info")):
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(names):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink() and not name.endswith(SKIP_SUFFIXES):
                out.append(p)
    return out


def is_text(data: bytes) -> bool:
    return b"\0" not in data[:8192]


def generate(out: IO[bytes], tree: Path, commits: int, seed: int) -> dict[str, Any]:
    """Write the whole fast-import stream; return the planted-secret manifest."""
    rng = random.Random(seed)
    b = Builder(out, rng, commits)
    out.write(b"feature done\n")
    pending = load_corpus(tree)
    pending.reverse()  # pop() from the end = directory order
    secrets = make_secrets(rng)
    planted: list[dict[str, Any]] = []

    def add_entry(br: Branch, rel: str, data: bytes, mode: str = "100644") -> tuple[str, str, Entry]:
        e = Entry(b.blob(data), data if is_text(data) and len(data) <= EDIT_MAX_BYTES else None, mode)
        e.weight = rng.paretovariate(1.2)
        br.files[rel] = e
        br.touched.add(rel)
        return ("M", rel, e)

    def add_batch(br: Branch, n: int) -> list[tuple[str, str, Entry | None]]:
        changes: list[tuple[str, str, Entry | None]] = []
        for _ in range(min(n, len(pending))):
            p = pending.pop()
            rel = p.relative_to(tree).as_posix()
            mode = "100755" if os.access(p, os.X_OK) else "100644"
            changes.append(add_entry(br, rel, p.read_bytes(), mode))
        return changes

    main = Branch("refs/heads/main", {})
    first = max(1, len(pending) // 6)
    b.commit(main, "Initial import", add_batch(main, first))  # type: ignore[arg-type]

    features: list[Branch] = []
    releases: list[Branch] = []
    stale: list[Branch] = []
    merged: list[str] = []
    n_feature = 0
    growth_until = int(commits * 0.7)
    release_at = [int(commits * f) for f in (0.3, 0.5, 0.7, 0.9)]
    patch = 0
    # planted leaks: (commit index on main, kind, commits until removed, where)
    plan = {
        int(commits * 0.15): ("aws", 12, "main"),
        int(commits * 0.25): ("github", 3, "feature"),
        int(commits * 0.35): ("slack", 0, "stale"),
        int(commits * 0.45): ("stripe", 25, "rename"),
        int(commits * 0.55): ("pem", 0, "tag"),
        int(commits * 0.65): ("gitlab", 300, "main"),
        int(commits * 0.80): ("webhook", -1, "main"),
    }
    removals: dict[int, tuple[Branch, str, dict[str, Any]]] = {}

    def msg(path: str) -> str:
        mod = path.split("/")[0]
        return f"{rng.choice(VERBS)} {mod}: {rng.choice(TOPICS)}"

    while b.commits < commits:
        i = b.commits
        # ---- planted leaks
        due = [k for k in plan if k <= i]
        if due:
            kind, life, where = plan.pop(due[0])
            path, data, values = secret_file(kind, secrets)
            rec: dict[str, Any] = {"kind": kind, "path": path, "secrets": values, "where": where}
            if where in ("main", "rename"):
                b.commit(main, f"Add {path}", [add_entry(main, path, data)])
                rec["added_on"] = "main"
                if where == "rename":
                    new = path.replace("payments", "billing")
                    main.files[new] = main.files.pop(path)
                    b.commit(
                        main, f"Rename {path} to {new}", [("D", path, None), ("M", new, main.files[new])]
                    )
                    rec["renamed_to"] = path = new
                if life > 0:
                    removals[b.commits + life] = (main, path, rec)
                else:
                    rec["removed"] = False
            elif where == "feature":
                fb = Branch(
                    f"refs/heads/feature/ci-release-{n_feature}", dict(main.files), main.head, planned=8
                )
                n_feature += 1
                b.commit(fb, f"Add {path}", [add_entry(fb, path, data)])
                features.append(fb)
                removals[b.commits + life] = (fb, path, rec)  # removed on the branch, then merged
                rec["added_on"] = fb.ref
            elif where == "stale":
                sb = Branch("refs/heads/experiment/slack-bot", dict(main.files), main.head, planned=-1)
                b.commit(sb, f"WIP {path}", [add_entry(sb, path, data)])
                b.commit(sb, "WIP more notifications", [])
                stale.append(sb)
                rec["added_on"], rec["removed"] = sb.ref, False
            elif where == "tag":
                hb = Branch("refs/heads/hotfix/deploy-keys", dict(main.files), main.head)
                b.commit(hb, f"Hotfix: deploy keys {path}", [add_entry(hb, path, data)])
                assert hb.head is not None
                b.tag("v0.9.1-hotfix", hb.head, "Emergency hotfix build")
                rec["added_on"], rec["removed"], rec["reachable_only_from"] = (
                    hb.ref,
                    False,
                    "refs/tags/v0.9.1-hotfix",
                )
                rec["deleted_branch"] = hb.ref  # the ref is deleted after import; only the tag keeps it
            planted.append(rec)
            continue
        gone = [k for k in removals if k <= i]
        if gone:
            br, path, rec = removals.pop(gone[0])
            if path in br.files:
                del br.files[path]
                br.touched.add(path)
                b.commit(br, f"Remove leaked credentials in {path}", [("D", path, None)])
                rec["removed"] = True
            continue
        # ---- branch management
        if len(features) < 4 and rng.random() < 0.04:
            features.append(
                Branch(
                    f"refs/heads/feature/{rng.choice(TOPICS).replace(' ', '-')}-{n_feature}",
                    dict(main.files),
                    main.head,
                    planned=rng.randint(2, 40) if rng.random() > 0.05 else -1,
                )
            )
            n_feature += 1
        for fb in list(features):
            if fb.planned == 0:
                changes: list[tuple[str, str, Entry | None]] = []
                for path in sorted(fb.touched):
                    if path in fb.files:
                        main.files[path] = fb.files[path]
                        changes.append(("M", path, fb.files[path]))
                    elif path in main.files:
                        del main.files[path]
                        changes.append(("D", path, None))
                assert fb.head is not None
                b.commit(main, f"Merge branch '{fb.ref[11:]}'", changes, merge=fb.head)
                features.remove(fb)
                merged.append(fb.ref)
            elif fb.planned < 0 and fb.head is not None and rng.random() < 0.02:
                features.remove(fb)  # abandoned: stays as an unmerged ref
                stale.append(fb)
        if release_at and i >= release_at[0]:
            release_at.pop(0)
            ver = f"{len(releases) + 1}.0"
            rb = Branch(f"refs/heads/release/{ver}", dict(main.files), main.head)
            releases.append(rb)
            assert main.head is not None
            b.tag(f"v{ver}.0", main.head, f"Release {ver}.0")
        # ---- pick the branch and the kind of commit
        roll = rng.random()
        if features and roll < 0.35:
            br = rng.choice(features)
        elif releases and roll < 0.38:
            br = releases[-1] if rng.random() < 0.8 else rng.choice(releases)
        else:
            br = main
        if br is main and pending and i < growth_until and rng.random() < 0.12:
            changes = add_batch(main, rng.randint(1, 40))  # type: ignore[arg-type]
            b.commit(main, f"Add {changes[0][1].split('/')[0]} modules", changes)
            continue
        kind = rng.random()
        if kind < 0.02 and br.files:  # rename (no new blob)
            path = rng.choice(list(br.files))
            stem, ext = os.path.splitext(path)
            new = f"{stem}_{rng.choice(['legacy', 'compat', 'v2', 'impl'])}{ext}"
            if new in br.files:
                continue
            br.files[new] = br.files.pop(path)
            br.touched.update((path, new))
            b.commit(br, f"Rename {path} to {new}", [("D", path, None), ("M", new, br.files[new])])
        elif kind < 0.035 and br.files:  # delete
            path = rng.choice(list(br.files))
            del br.files[path]
            br.touched.add(path)
            b.commit(br, f"Remove obsolete {path}", [("D", path, None)])
        elif kind < 0.07 and br.previous:  # revert the last change to a file: an existing blob again
            path = rng.choice(sorted(br.previous))
            old = br.previous.pop(path)
            if path not in br.files:
                continue
            e = Entry(b.blob(old), old, br.files[path].mode, br.files[path].weight)
            br.files[path] = e
            br.touched.add(path)
            b.commit(br, f'Revert "{msg(path)}"', [("M", path, e)])
        else:  # the common case: small edits to 1-4 files
            changes = []
            for _ in range(rng.choices((1, 2, 3, 4, 6), (40, 30, 15, 10, 5))[0]):
                path = b._pick(br)  # type: ignore[assignment]
                if path is None:
                    break
                cur = br.files[path]
                assert cur.content is not None
                new_data = b.edit(path, cur.content, b.commits)
                br.previous[path] = cur.content
                e = Entry(b.blob(new_data), new_data, cur.mode, cur.weight)
                br.files[path] = e
                br.touched.add(path)
                changes.append(("M", path, e))
                b.recent = [*b.recent[-19:], path]
            if not changes:
                continue
            b.commit(br, msg(changes[0][1]), changes)
        if br in releases and rng.random() < 0.08:
            assert br.head is not None
            patch += 1
            b.tag(f"v{br.ref.rsplit('/', 1)[1]}.{patch}", br.head, "Patch release")
        if br in features:
            br.planned -= 1
    out.write(b"done\n")
    return {
        "seed": seed,
        "commits": commits,
        "planted": planted,
        "stale_branches": [s.ref for s in stale],
        "merged_branches": merged,
    }


# ----------------------------------------------------------------------------------------- repo stats


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def repo_stats(repo: Path) -> dict[str, int]:
    """Commits, refs and unique blobs/bytes reachable from all refs: what a full-history scan must read."""
    rev = subprocess.Popen(
        ["git", "-C", str(repo), "rev-list", "--objects", "--all", "--no-object-names"],
        stdout=subprocess.PIPE,
    )
    chk = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-check=%(objecttype) %(objectsize)"],
        stdin=rev.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    rev.wait()
    blobs = blob_bytes = trees = 0
    for line in chk.stdout.splitlines():
        kind, size = line.split()
        if kind == "blob":
            blobs += 1
            blob_bytes += int(size)
        elif kind == "tree":
            trees += 1
    return {
        "commits": int(git(repo, "rev-list", "--all", "--count").strip()),
        "refs": len(git(repo, "for-each-ref").splitlines()),
        "unique_blobs": blobs,
        "unique_blob_bytes": blob_bytes,
        "trees": trees,
        "pack_bytes": sum(p.stat().st_size for p in (repo / "objects" / "pack").glob("*.pack")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=DEFAULT_TREE, help="content corpus (built when missing)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bare repository to create")
    ap.add_argument("--commits", type=int, default=15_000, help="commits to write (default 15,000)")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--force", action="store_true", help="replace an existing repository")
    ap.add_argument(
        "--no-repack",
        action="store_true",
        help="keep fast-import's pack (few deltas) instead of a `git repack -adf` like a real clone's",
    )
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    if out.exists():
        if not args.force:
            print(f"{out} exists; --force to rebuild", file=sys.stderr)
            print(json.dumps(repo_stats(out)))
            return 0
        shutil.rmtree(out)
    if args.tree == DEFAULT_TREE and not DEFAULT_TREE.is_dir():
        build_corpus(DEFAULT_TREE)
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(tmp)], check=True)
    fi = subprocess.Popen(
        ["git", "-C", str(tmp), "fast-import", "--quiet", "--done", "--depth=50"],
        stdin=subprocess.PIPE,
    )
    assert fi.stdin is not None
    with fi.stdin as stream:
        manifest = generate(stream, args.tree.resolve(), args.commits, args.seed)
    if fi.wait() != 0:
        raise SystemExit("git fast-import failed")
    # merged feature branches are deleted, as hosting sites do; so is the hotfix branch whose leak the
    # tag alone keeps reachable
    doomed = manifest["merged_branches"] + [
        r["deleted_branch"] for r in manifest["planted"] if "deleted_branch" in r
    ]
    subprocess.run(
        ["git", "-C", str(tmp), "update-ref", "--stdin"],
        input="".join(f"delete {ref}\n" for ref in doomed),
        text=True,
        check=True,
    )
    t_import = time.perf_counter() - t0
    if not args.no_repack:
        subprocess.run(
            ["git", "-C", str(tmp), "repack", "-a", "-d", "-f", "-q", "--window=10", "--depth=50"], check=True
        )
    subprocess.run(["git", "-C", str(tmp), "gc", "--quiet", "--prune=now"], check=True)
    tmp.rename(out)
    stats = repo_stats(out)
    manifest["stats"] = stats
    out.with_name(out.name + ".planted.json").write_text(json.dumps(manifest, indent=2) + "\n")
    took = time.perf_counter() - t0
    print(
        f"{out}: {stats['commits']:,} commits, {stats['refs']} refs, {stats['unique_blobs']:,} unique blobs, "
        f"{stats['unique_blob_bytes'] / 1e6:,.1f} MB unique blob bytes, {stats['trees']:,} trees, "
        f"pack {stats['pack_bytes'] / 1e6:,.1f} MB; {len(manifest['planted'])} planted leaks; "
        f"built in {took:.0f} s (fast-import {t_import:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
