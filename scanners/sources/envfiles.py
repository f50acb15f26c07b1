"""Files that define environment variables: ``.env``, Kubernetes manifests, Helm values, compose files.

Each parser turns a file into ``EnvVar`` records (name, literal value, where the value sits in the
file) and never decides what is a secret: ``scanners.sources.env`` runs the engine and the name
heuristic over them. YAML is walked as PyYAML's node graph (``yaml.compose_all``) rather than loaded,
because nodes keep the line and column of every value, and scalars keep their text as written
(``0777`` stays ``0777``). Nothing is followed or fetched: ``valueFrom``/``envFrom`` are references
and never values, and ``env_file:`` entries are reported as warnings, not opened.

Messages name files, lines, keys and objects, never a value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from depthguard.errors import SourceError
from scanners.allow import line_allows, previous_line_allows
from scanners.decode import prepare
from scanners.engine import decode_value

MAX_WARNINGS_PER_FILE = 20
MAX_NODES = 200_000
"""Walks visit each node once (aliases are not re-expanded, so a "billion laughs" stays small) and
stop after this many nodes, or this deep, with a warning."""
MAX_DEPTH = 64
MAX_FILE_SIZE = 64 * 1024 * 1024
"""Env files are small; a file this large was named by mistake and is skipped with a warning."""

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One variable definition found in a file (or a process: then only name and value are set)."""

    name: str
    """Reported as ``env:NAME``; a flattened Helm path (``postgresql.auth.password``) for values files."""
    value: str
    key: str = ""
    """The name the variable-name heuristic judges when it differs from ``name`` (a Helm leaf key)."""
    line: int = 1
    """1-based line of the value's first character in the file."""
    column: int | None = None
    """1-based column of the value's first character when the value is written verbatim there (no
    escapes, not base64); None keeps columns relative to the ``NAME=VALUE`` text."""
    indent: int = 0
    """Columns the value's continuation lines are shifted by in the file (a YAML literal block)."""
    allowed: bool = False
    """An inline allow comment (``# depthguard:allow``) covers the line."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    """The variables of one file plus what could not be read (warnings name lines and keys only)."""

    variables: list[EnvVar] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> count of what was not scanned (``binary``: the file, or a Secret's binary value)."""

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS_PER_FILE:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_WARNINGS_PER_FILE:
            self.warnings.append("… further warnings for this file suppressed")


# ---------------------------------------------------------------------------------------------------
# kind detection

_COMPOSE_NAME = re.compile(r"^(?:docker-)?compose[\w.-]*\.ya?ml$")
_HELM_NAME = re.compile(r"^values[\w.-]*\.ya?ml$")
_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_ASSIGNMENT = re.compile(r"^[ \t]*(?:export[ \t]+)?[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=")


def _is_dotenv_name(name: str) -> bool:
    if name.endswith(_YAML_SUFFIXES):  # ``.env.yaml`` is YAML
        return False
    return name in (".env", "env", ".envrc") or name.startswith(".env.") or name.endswith(".env")


def _looks_dotenv(text: str) -> bool:
    """The first line that is neither blank nor a comment is a ``NAME=VALUE`` assignment."""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return bool(_ASSIGNMENT.match(line))
    return False


def detect_kind(path: Path, text: str) -> str:
    """``dotenv``, ``compose``, ``helm`` or ``yaml`` (Kubernetes manifests, or any of the YAML kinds
    decided per document by its content). Names decide first because a values file may hold any
    shape, then content: a dotenv file parses as YAML (one plain scalar), so it is checked first."""
    name = path.name.lower()
    if _is_dotenv_name(name):
        return "dotenv"
    if _COMPOSE_NAME.match(name):
        return "compose"
    if _HELM_NAME.match(name):
        return "helm"
    if not name.endswith(_YAML_SUFFIXES) and _looks_dotenv(text):
        return "dotenv"
    return "yaml"


# ---------------------------------------------------------------------------------------------------
# reading

def read_text(path: Path) -> tuple[str | None, str]:
    """(text, shown name) of an env file; None text for a binary or oversized file. Errors become one-line
    ``SourceError`` messages that name the option and the path as the user gave it."""
    shown = str(path)
    try:
        if path.stat().st_size > MAX_FILE_SIZE:
            return None, shown
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise SourceError(f"--file {shown}: no such file or directory") from exc
    except IsADirectoryError as exc:
        raise SourceError(f"--file {shown}: is a directory") from exc
    except PermissionError as exc:
        raise SourceError(f"--file {shown}: permission denied") from exc
    except OSError as exc:
        raise SourceError(f"--file {shown}: cannot read: {exc.strerror or 'I/O error'}") from exc
    data = prepare(raw)
    if data is None:
        return None, shown
    return decode_value(data), shown


def parse_file(path: Path) -> Parsed:
    """Every variable defined in ``path``, with ``extra`` naming the file and its kind."""
    text, shown = read_text(path)
    if text is None:
        if path.stat().st_size > MAX_FILE_SIZE:
            return Parsed(warnings=[f"{shown}: larger than {MAX_FILE_SIZE >> 20} MiB, not scanned"],
                          skipped={"too-large": 1})
        return Parsed(warnings=[f"{shown}: binary file, not scanned"], skipped={"binary": 1})
    kind = detect_kind(path, text)
    parsed = parse_dotenv(text, shown) if kind == "dotenv" else parse_yaml(text, shown, kind)
    lines = text.split("\n")
    parsed.variables = [replace(v, allowed=_allowed(lines, v.line)) for v in parsed.variables]
    return parsed


def _allowed(lines: list[str], line: int) -> bool:
    here = lines[line - 1].encode("utf-8", "surrogatepass") if 0 < line <= len(lines) else b""
    before = lines[line - 2].encode("utf-8", "surrogatepass") if 1 < line <= len(lines) + 1 else b""
    return line_allows(here) or previous_line_allows(before)


# ---------------------------------------------------------------------------------------------------
# dotenv

_DOTENV_NAME = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")
_BARE_NAME = re.compile(r"[ \t]*(?:export[ \t]+)?[A-Za-z_][A-Za-z0-9_.-]*[ \t]*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$", "`": "`"}


def _unquoted(rest: str) -> str:
    """An unquoted value ends at a ``#`` that follows whitespace (``PASS=a#b`` keeps its ``#``)."""
    m = re.search(r"[ \t]#", rest)
    return (rest[: m.start()] if m else rest).rstrip(" \t")


def _quoted(lines: list[str], i: int, start: int, quote: str) -> tuple[str, int, bool] | None:
    """The value of a quoted string opened at ``lines[i][start]``: (value, index of the closing line,
    verbatim). Double quotes process backslash escapes and may span lines; single quotes are literal
    and may span lines too (as in docker compose and python-dotenv). None if it never closes."""
    out: list[str] = []
    verbatim = True
    row, pos = i, start + 1
    while row < len(lines):
        text = lines[row]
        while pos < len(text):
            ch = text[pos]
            if ch == quote:
                return "".join(out), row, verbatim
            if quote == '"' and ch == "\\" and pos + 1 < len(text):
                out.append(_ESCAPES.get(text[pos + 1], "\\" + text[pos + 1]))
                verbatim = False
                pos += 2
                continue
            out.append(ch)
            pos += 1
        out.append("\n")
        row, pos = row + 1, 0
    return None


def parse_dotenv(text: str, shown: str) -> Parsed:
    """``NAME=VALUE`` lines with ``export``, quotes, comments and multi-line quoted values; line
    numbers are kept so a finding points at the value in the file."""
    parsed = Parsed()
    lines = [line.rstrip("\r") for line in text.split("\n")]
    extra = {"file": shown, "kind": "dotenv"}
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _DOTENV_NAME.match(line)
        if m is None:
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and not _BARE_NAME.match(line):
                parsed.warn(f"{shown}:{i + 1}: not a NAME=VALUE line, skipped")
            i += 1
            continue
        name, start = m.group("name"), m.end()
        rest = line[start:]
        if rest[:1] in ("'", '"'):
            got = _quoted(lines, i, start, rest[0])
            if got is not None:
                value, end_row, verbatim = got
                col = start + 2 if verbatim else None
                parsed.variables.append(EnvVar(name, value, line=i + 1, column=col, extra=dict(extra)))
                i = end_row + 1
                continue
            parsed.warn(f"{shown}:{i + 1}: {name}: unterminated quote, value read to the end of the line")
            rest, start = rest[1:], start + 1
        value = _unquoted(rest)
        if value:
            parsed.variables.append(EnvVar(name, value, line=i + 1, column=start + 1, extra=dict(extra)))
        i += 1
    return parsed


# ---------------------------------------------------------------------------------------------------
# YAML helpers

class _Walk:
    """Budget shared by one file's walks: alias-heavy or deeply nested YAML stops with a warning."""

    def __init__(self, parsed: Parsed, shown: str) -> None:
        self.parsed = parsed
        self.shown = shown
        self.nodes = 0
        self.exhausted = False
        self._seen: set[int] = set()

    def enter(self, node: Node, depth: int) -> bool:
        """Whether to walk ``node``: each node once, however many aliases point at it (an alias
        repeats a value that sits once in the file, and a recursive alias would never end)."""
        if id(node) in self._seen:
            return False
        self._seen.add(id(node))
        return self.spend(depth)

    def spend(self, depth: int) -> bool:
        self.nodes += 1
        if self.nodes <= MAX_NODES and depth <= MAX_DEPTH:
            return True
        if not self.exhausted:
            self.exhausted = True
            self.parsed.warn(f"{self.shown}: YAML too large or too deeply nested, rest not scanned")
        return False


def _items(node: MappingNode) -> Iterator[tuple[str, Node]]:
    """Key/value pairs with scalar keys; ``<<: *anchor`` merges are expanded in place."""
    for k, v in node.value:
        if not isinstance(k, ScalarNode):
            continue
        if k.tag == _MERGE_TAG:
            merged = v.value if isinstance(v, SequenceNode) else [v]
            for m in merged:
                if isinstance(m, MappingNode):
                    yield from _items(m)
            continue
        yield k.value, v


def _get(node: Node | None, *path: str) -> Node | None:
    for key in path:
        if not isinstance(node, MappingNode):
            return None
        node = next((v for k, v in _items(node) if k == key), None)
    return node


def _scalar(node: Node | None) -> str | None:
    """The text of a non-null scalar, as written."""
    if isinstance(node, ScalarNode) and node.tag != _NULL_TAG:
        return str(node.value)
    return None


def _position(lines: list[str], node: ScalarNode, skip: int = 0) -> tuple[int, int | None, int]:
    """(line, column or None, indent) of ``node``'s value in the file; ``skip`` characters of the
    scalar precede the value (``NAME=`` in a compose list item). A column is only given when the
    text there is exactly the value, so escapes, folding and quotes never produce a wrong one."""
    value: str = node.value
    row = node.start_mark.line
    if node.style in ("|", ">"):
        row += 1
        while row < len(lines) and not lines[row].strip():
            row += 1
        if row >= len(lines) or node.style == ">":
            return row + 1, None, 0
        indent = len(lines[row]) - len(lines[row].lstrip(" "))
        body = value.rstrip("\n").split("\n")
        window = [line[indent:] for line in lines[row : row + len(body)]]
        return row + 1, (indent + 1 if window == body else None), indent
    text = value[skip:]
    if "\n" in text or row >= len(lines):
        return row + 1, None, 0
    col = node.start_mark.column + skip + (1 if node.style in ("'", '"') else 0)
    return row + 1, (col + 1 if text and lines[row][col : col + len(text)] == text else None), 0


def _variable(lines: list[str], name: str, node: ScalarNode, extra: dict[str, Any],
              *, key: str = "", skip: int = 0) -> EnvVar | None:
    value = _scalar(node)
    if value is None or not value[skip:]:
        return None
    line, column, indent = _position(lines, node, skip)
    return EnvVar(name, value[skip:], key=key, line=line, column=column, indent=indent, extra=extra)


# ---------------------------------------------------------------------------------------------------
# YAML dispatch

def _compose_nodes(text: str, shown: str) -> list[Node]:
    try:
        return [n for n in yaml.compose_all(text, Loader=_Loader) if n is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "parse error").split())
        raise SourceError(f"--file {shown}: invalid YAML{where}: {problem}") from exc
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise SourceError(f"--file {shown}: invalid YAML: {problem}") from exc
    except RecursionError as exc:
        raise SourceError(f"--file {shown}: invalid YAML: nesting too deep") from exc


def _doc_kind(doc: Node, file_kind: str) -> str:
    if file_kind in ("compose", "helm"):
        return file_kind
    if _scalar(_get(doc, "apiVersion")) is not None and _scalar(_get(doc, "kind")) is not None:
        return "kubernetes"
    if isinstance(_get(doc, "services"), MappingNode):
        return "compose"
    return "helm"


def parse_yaml(text: str, shown: str, file_kind: str) -> Parsed:
    """Every document of a YAML file, each parsed as the kind its content (or the file name) says."""
    parsed = Parsed()
    lines = [line.rstrip("\r") for line in text.split("\n")]
    walk = _Walk(parsed, shown)
    for doc in _compose_nodes(text, shown):
        kind = _doc_kind(doc, file_kind)
        if kind == "kubernetes":
            _kubernetes(doc, lines, shown, walk)
        elif kind == "compose":
            _compose(doc, lines, shown, walk)
        else:
            _helm(doc, "", lines, {"file": shown, "kind": "helm"}, walk, 0)
    return parsed


# ---------------------------------------------------------------------------------------------------
# Kubernetes

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _object_name(doc: Node) -> str:
    kind = _scalar(_get(doc, "kind")) or "?"
    name = _scalar(_get(doc, "metadata", "name")) or "?"
    namespace = _scalar(_get(doc, "metadata", "namespace"))
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def _kubernetes(doc: Node, lines: list[str], shown: str, walk: _Walk) -> None:
    """One object (or each item of a ``List``): literal container ``env`` values in any pod template
    (the walk finds ``containers`` wherever a workload kind or CRD nests them), and the ``data`` /
    ``stringData`` of Secrets and ConfigMaps. ``valueFrom`` and ``envFrom`` only name other objects."""
    if not walk.enter(doc, 0):  # an object aliased into a List many times is read once
        return
    kind = _scalar(_get(doc, "kind"))
    if kind == "List":
        items = _get(doc, "items")
        for item in items.value if isinstance(items, SequenceNode) else []:
            _kubernetes(item, lines, shown, walk)
        return
    base = {"file": shown, "kind": "kubernetes", "object": _object_name(doc)}
    if kind in ("Secret", "ConfigMap"):
        _object_data(doc, kind, lines, base, walk)
        return
    _find_containers(doc, lines, base, walk, 0)


def _find_containers(node: Node, lines: list[str], base: dict[str, Any], walk: _Walk, depth: int) -> None:
    if depth and not walk.enter(node, depth):  # depth 0 is the object, entered by the caller
        return
    if isinstance(node, SequenceNode):
        for child in node.value:
            _find_containers(child, lines, base, walk, depth + 1)
        return
    if not isinstance(node, MappingNode):
        return
    for key, value in _items(node):
        if key in _CONTAINER_LISTS and isinstance(value, SequenceNode):
            for container in value.value:
                _container_env(container, lines, base, walk)
        else:
            _find_containers(value, lines, base, walk, depth + 1)


def _container_env(container: Node, lines: list[str], base: dict[str, Any], walk: _Walk) -> None:
    env = _get(container, "env")
    if not isinstance(env, SequenceNode):
        return
    extra = {**base, "container": _scalar(_get(container, "name")) or "?"}
    for entry in env.value:
        walk.spend(0)
        name, value = _scalar(_get(entry, "name")), _get(entry, "value")
        if name and isinstance(value, ScalarNode):
            var = _variable(lines, name, value, dict(extra))
            if var is not None:
                walk.parsed.variables.append(var)


def _object_data(doc: Node, kind: str, lines: list[str], base: dict[str, Any], walk: _Walk) -> None:
    fields = ("data", "stringData") if kind == "Secret" else ("data",)
    for fname in fields:
        data = _get(doc, fname)
        if not isinstance(data, MappingNode):
            continue
        for key, node in _items(data):
            if not isinstance(node, ScalarNode) or not walk.spend(0):
                continue
            extra = {**base, "field": fname}
            if kind == "Secret" and fname == "data":
                _secret_data(key, node, lines, extra, walk)
                continue
            var = _variable(lines, key, node, extra)
            if var is not None:
                walk.parsed.variables.append(var)


def _secret_data(key: str, node: ScalarNode, lines: list[str], extra: dict[str, Any], walk: _Walk) -> None:
    """A Secret's ``data`` value is base64: the decoded text is scanned, anchored at the value's line
    (no column in the file: the secret is not written there)."""
    encoded = "".join(str(node.value).split())
    if not encoded or node.tag == _NULL_TAG:
        return
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        walk.parsed.warn(f"{walk.shown}:{node.start_mark.line + 1}: {extra['object']} data key "
                         f"{key!r}: invalid base64, not scanned")
        return
    if b"\0" in raw:
        skipped = walk.parsed.skipped  # a keystore or an image: no text to scan
        skipped["binary"] = skipped.get("binary", 0) + 1
        return
    value = decode_value(raw)
    if value:
        line = node.start_mark.line + 1
        walk.parsed.variables.append(EnvVar(key, value, line=line, extra={**extra, "encoding": "base64"}))


# ---------------------------------------------------------------------------------------------------
# docker compose

def _compose(doc: Node, lines: list[str], shown: str, walk: _Walk) -> None:
    """``services.*.environment`` and ``services.*.build.args`` in list (``- NAME=VALUE``) or mapping
    form; ``- NAME`` alone passes the host's value through and holds none. ``env_file`` is listed in
    a warning, not opened: the user decides which files to scan."""
    services = _get(doc, "services")
    if not isinstance(services, MappingNode):
        return
    for svc, spec in _items(services):
        extra = {"file": shown, "kind": "compose", "service": svc}
        _compose_env(_get(spec, "environment"), lines, extra, walk)
        _compose_env(_get(spec, "build", "args"), lines, {**extra, "in": "build.args"}, walk)
        for path in _env_files(_get(spec, "env_file")):
            walk.parsed.warn(f"{shown}: service {svc}: env_file {path} not followed (scan it with --file)")


def _env_files(node: Node | None) -> list[str]:
    entries = node.value if isinstance(node, SequenceNode) else [node]
    out = []
    for entry in entries:
        path = _scalar(entry) or _scalar(_get(entry, "path"))
        if path:
            out.append(path)
    return out


def _compose_env(node: Node | None, lines: list[str], extra: dict[str, Any], walk: _Walk) -> None:
    if isinstance(node, MappingNode):
        pairs = [(k, v) for k, v in _items(node) if isinstance(v, ScalarNode)]
        found = [_variable(lines, k, v, dict(extra)) for k, v in pairs]
    elif isinstance(node, SequenceNode):
        found = []
        for item in node.value:
            text = _scalar(item)
            if text is None or "=" not in text:
                continue
            name = text.split("=", 1)[0].strip()
            found.append(_variable(lines, name, item, dict(extra), skip=len(text.split("=", 1)[0]) + 1))
    else:
        return
    walk.parsed.variables.extend(v for v in found if v is not None)


# ---------------------------------------------------------------------------------------------------
# Helm values

_INDEX = re.compile(r"(?:\[\d+\])+$")

def _helm(node: Node, prefix: str, lines: list[str], extra: dict[str, Any], walk: _Walk, depth: int) -> None:
    """Nested mappings flattened to ``a.b.c``; list items as ``a.b[0]``, except Kubernetes-style
    ``{name: X, value: Y}`` entries (``extraEnv:``), which become ``a.b.X``. The heuristic judges the
    leaf key, since ``postgresql.auth.password`` is a password whatever its parents are called."""
    if not walk.enter(node, depth):
        return
    if isinstance(node, ScalarNode):
        leaf = _INDEX.sub("", prefix).rsplit(".", 1)[-1]
        var = _variable(lines, prefix or "value", node, dict(extra), key=leaf)
        if var is not None:
            walk.parsed.variables.append(var)
    elif isinstance(node, MappingNode):
        for key, child in _items(node):
            _helm(child, f"{prefix}.{key}" if prefix else key, lines, extra, walk, depth + 1)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            name, value = _scalar(_get(item, "name")), _get(item, "value")
            if name and isinstance(value, ScalarNode):
                _helm(value, f"{prefix}.{name}" if prefix else name, lines, extra, walk, depth + 1)
            else:
                _helm(item, f"{prefix}[{i}]", lines, extra, walk, depth + 1)


__all__ = ["EnvVar", "Parsed", "detect_kind", "parse_dotenv", "parse_file", "parse_yaml"]
