"""Environment variables: this process, another process (``/proc/PID/environ``), every process, and
the files that define variables (``.env``, Kubernetes manifests, Helm values, docker compose).

Each variable is scanned on its own as the text ``NAME=VALUE``, so every provider and generic rule
sees the assignment it was written for, and then judged by the variable-name heuristic
(``scanners.envnames``), which reports a random value under a secret-like name that no rule
recognised. One finding per value: whatever the engine reports wins over the heuristic. Findings are
named ``env:NAME`` (design.md) and their ``extra`` names where the variable lives (pid and command,
or file, kind and object).

Reading another process's environment is a privilege the kernel checks (same user or
CAP_SYS_PTRACE); this module only reports what it was allowed to read. Never logs or prints a
value: messages carry pids, names, files and lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from depthguard.errors import SourceError
from scanners.engine import Engine, decode_value
from scanners.entropy import shannon
from scanners.envnames import CONFIDENCE, DESCRIPTION, RULE_ID, SEVERITY, judge
from scanners.finding import Finding
from scanners.result import ScanStats
from scanners.sources.envfiles import EnvVar, parse_file

PROC = Path("/proc")


@dataclass
class EnvScan:
    findings: list[Finding]
    stats: ScanStats
    """``files`` counts variables scanned, ``bytes`` their ``NAME=VALUE`` text; ``skipped`` counts
    processes (``permission``, ``exited``) and binary files or values."""
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# one variable


def _encode(text: str) -> bytes:
    # lone surrogates (a JSON image config may carry them) pass through as bytes rather than fail
    return text.encode("utf-8", "surrogatepass")


def _heuristic(engine: Engine, var: EnvVar, source: str) -> Finding | None:
    """The name heuristic's finding for ``var``, honouring the engine's disabled filters, allowlist and
    documented example values, so configuration silences it like any rule."""
    verdict = judge(var.name, var.value, key=var.key or None, disabled=engine.disabled_filters)
    if not verdict.secret:
        return None
    secret = var.value[verdict.offset : verdict.offset + verdict.length]
    documented = "value.documented-example" not in engine.disabled_filters and secret in engine.documented
    if documented or engine.allowlist.allows(secret):
        return None
    column = len(var.name) + 2 + verdict.offset  # the value starts after ``NAME=``
    return Finding(
        rule_id=RULE_ID, description=DESCRIPTION, severity=SEVERITY, confidence=CONFIDENCE,
        path=f"env:{var.name}", line=1, column=column, end_column=column + len(secret),
        secret=secret, entropy=shannon(secret), source=source,
    )


def _scan_var(engine: Engine, var: EnvVar, source: str, stats: ScanStats) -> list[Finding]:
    """Findings for one variable, positioned in its ``NAME=VALUE`` text (line 1 unless the value
    spans lines). The heuristic runs only when no rule matched: one finding per value."""
    text = _encode(f"{var.name}={var.value}")
    stats.files += 1
    stats.bytes += len(text)
    if var.allowed:
        return []
    found = engine.scan(text, f"env:{var.name}", source)
    if not found:
        hit = _heuristic(engine, var, source)
        found = [hit] if hit is not None else []
    return [replace(f, extra=dict(var.extra)) for f in found]


def _in_file(f: Finding, var: EnvVar) -> Finding:
    """Move a finding from ``NAME=VALUE`` coordinates to the file's: the value's line, and its column
    when the value is written verbatim there (else columns stay relative to ``NAME=VALUE``)."""
    if var.column is None:
        return replace(f, line=var.line)
    # end_column is on the secret's last line: a later line of the value, shifted like one
    ends_later = "\n" in f.secret
    if f.line == 1:
        shift = var.column - (len(var.name) + 2)
        end = f.end_column + (var.indent if ends_later else shift)
        return replace(f, line=var.line, column=f.column + shift, end_column=end)
    end = f.end_column + var.indent
    return replace(f, line=var.line + f.line - 1, column=f.column + var.indent, end_column=end)


def _scan_all(engine: Engine, variables: Iterable[EnvVar], source: str, stats: ScanStats,
              extra: dict[str, Any] | None = None) -> list[Finding]:
    out: list[Finding] = []
    for var in variables:
        if not var.name or not var.value:
            continue
        for f in _scan_var(engine, var, source, stats):
            out.append(replace(f, extra={**f.extra, **extra}) if extra else f)
    return out


def scan_variables(engine: Engine, variables: Iterable[tuple[str, str]], *, source: str = "env",
                   extra: dict[str, Any] | None = None) -> list[Finding]:
    """Findings in ``(name, value)`` pairs (an image config's ``Env``, a process environment), in input
    order. ``extra`` is merged into every finding's ``extra`` (the caller's keys win)."""
    return _scan_all(engine, (EnvVar(n, v) for n, v in variables), source, ScanStats(), extra)


# ---------------------------------------------------------------------------------------------------
# processes


def parse_environ(raw: bytes) -> list[tuple[str, str]]:
    """``/proc/PID/environ`` (or ``os.environb``) bytes -> pairs. Names and values are UTF-8, else
    latin-1 (every byte maps), the engine's own rule for bytes it reports. An entry without ``=``
    (possible through a raw ``execve``) has no value and is skipped."""
    pairs = []
    for entry in raw.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name:
            pairs.append((decode_value(name), decode_value(value)))
    return pairs


def _command(pid: int) -> str:
    """The process's ``comm`` (its executable name, at most 15 characters), else ``argv[0]``; never
    the rest of the command line, which may hold secrets of its own."""
    base = PROC / str(pid)
    try:
        comm = (base / "comm").read_bytes().rstrip(b"\n")
        if comm:
            return decode_value(comm)
    except OSError:
        pass
    try:
        return decode_value((base / "cmdline").read_bytes().split(b"\0", 1)[0]) or "?"
    except OSError:
        return "?"


def _read_environ(pid: int) -> bytes | None:
    """The raw environment, or None for a live process without one: kernel threads and zombies have
    no address space, and recent kernels refuse their ``environ`` with ESRCH where older ones read
    it as empty. Raises ProcessLookupError when the process is gone, PermissionError when the kernel
    refuses (another user's process without CAP_SYS_PTRACE)."""
    base = PROC / str(pid)
    try:
        return (base / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError) as exc:
        if base.is_dir():
            return None
        raise ProcessLookupError(pid) from exc


def _scan_process(engine: Engine, pid: int, raw: bytes, stats: ScanStats) -> list[Finding]:
    extra = {"pid": pid, "command": _command(pid)}
    variables = (EnvVar(n, v, extra=extra) for n, v in parse_environ(raw))
    return _scan_all(engine, variables, "env", stats)


def _finish(stats: ScanStats, engine: Engine, started: float) -> ScanStats:
    stats.rules, stats.engine = len(engine.rules), engine.backend
    stats.seconds = time.perf_counter() - started
    return stats


def scan_own_env(engine: Engine) -> EnvScan:
    """This process's environment as it is now (``os.environb``, including changes made after start,
    which ``/proc/self/environ`` does not show). No pid in ``extra``: it would name the scanner."""
    started, stats = time.perf_counter(), ScanStats()
    variables = (EnvVar(decode_value(n), decode_value(v)) for n, v in sorted(os.environb.items()))
    findings = _scan_all(engine, variables, "env", stats)
    return EnvScan(findings, _finish(stats, engine, started))


def scan_pid(engine: Engine, pid: int) -> EnvScan:
    """The environment process ``pid`` was started with (``/proc/PID/environ``; a process's own later
    ``setenv`` calls are not visible there)."""
    started, stats = time.perf_counter(), ScanStats()
    try:
        if pid <= 0:
            raise ProcessLookupError(pid)
        raw = _read_environ(pid)
    except ProcessLookupError as exc:
        raise SourceError(f"--pid {pid}: no such process") from exc
    except PermissionError as exc:
        raise SourceError(f"--pid {pid}: permission denied (run as the process's user or root)") from exc
    except OSError as exc:
        raise SourceError(f"--pid {pid}: cannot read its environment: {exc.strerror or 'I/O error'}") from exc
    if raw is None:
        warning = f"--pid {pid}: the process has no environment (a kernel thread or a zombie)"
        return EnvScan([], _finish(stats, engine, started), [warning])
    findings = _scan_process(engine, pid, raw, stats)
    return EnvScan(findings, _finish(stats, engine, started))


def _pids() -> list[int]:
    try:
        names = os.listdir(PROC)
    except OSError as exc:
        raise SourceError(f"{PROC}: cannot list processes ({exc.strerror or 'I/O error'})") from exc
    return sorted(int(n) for n in names if n.isdigit())


def scan_all_processes(engine: Engine) -> EnvScan:
    """Every process whose environment this user may read, findings sorted by pid.

    Reported per process: a value inherited from a parent appears once under each process that still
    holds it, which is also how far it has spread. Processes the kernel refuses are counted in
    ``stats.skipped["permission"]``, those that exit during the scan in ``["exited"]``, kernel threads
    and zombies (no address space, so no environment) in ``["no-environment"]``. The scanning process
    is a process like any other and is included."""
    started, stats = time.perf_counter(), ScanStats()
    findings: list[Finding] = []
    for pid in _pids():
        try:
            raw = _read_environ(pid)
        except PermissionError:
            stats.skip("permission")
            continue
        except ProcessLookupError:
            stats.skip("exited")
            continue
        except OSError:
            stats.skip("unreadable")
            continue
        if raw is None:
            stats.skip("no-environment")
            continue
        findings.extend(_scan_process(engine, pid, raw, stats))
    findings.sort(key=lambda f: (f.extra["pid"], f.path, f.line, f.column, f.rule_id))
    return EnvScan(findings, _finish(stats, engine, started))


# ---------------------------------------------------------------------------------------------------
# files


def scan_env_files(engine: Engine, files: Sequence[Path]) -> EnvScan:
    """Variables defined in ``files`` (kind detected per file, and per YAML document), findings in
    file order then line order. Missing files and invalid YAML raise ``SourceError``; binary files and
    undecodable entries are counted or warned about and the scan goes on."""
    started, stats = time.perf_counter(), ScanStats()
    findings: list[Finding] = []
    warnings: list[str] = []
    for path in files:
        parsed = parse_file(path)
        warnings.extend(parsed.warnings)
        for reason, n in parsed.skipped.items():
            stats.skip(reason, n)
        found: list[Finding] = []
        for var in parsed.variables:
            if var.name and var.value:
                found.extend(_in_file(f, var) for f in _scan_var(engine, var, "env", stats))
        found.sort(key=lambda f: (f.line, f.column, f.rule_id))
        findings.extend(found)
    return EnvScan(findings, _finish(stats, engine, started), warnings)


__all__ = ["EnvScan", "parse_environ", "scan_all_processes", "scan_env_files", "scan_own_env", "scan_pid",
           "scan_variables"]
