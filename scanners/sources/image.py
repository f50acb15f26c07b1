"""Container images: every layer's files (deleted ones too), the config, and the build history.

A target is a ``docker save`` tarball (the legacy ``<id>/layer.tar`` layout or the OCI-style one
Docker >= 25 writes), an OCI image layout directory, an OCI archive (that layout in a tar), or
``docker://NAME[:TAG]``, exported with the docker CLI into a private temp dir and deleted after.

Layers are streamed member by member (see ``scanners.sources.archive``) and scanned in manifest
order. While a layer streams, what it does to the layers below (new paths, whiteouts, opaque
directories) is recorded; once every layer is read, a finding is marked ``deleted`` when some later
layer removed or replaced its file, i.e. it is not in the final filesystem but still ships with
the image. A damaged layer costs a warning and the scan goes on; only an image of which nothing at
all could be read raises :class:`SourceError`.

Images are untrusted input: nothing is extracted or written anywhere (the docker:// export aside),
references in manifests are checked before anything is opened, and every read is bounded by
:class:`ImageLimits`. Never logs file contents, variable values or history lines.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from depthguard.errors import SourceError
from scanners.engine import Engine
from scanners.finding import Finding
from scanners.result import ScanStats
from scanners.sources.archive import (
    CHUNK,
    FORMAT_ERRORS,
    GZIP_MAGIC,
    ZSTD_MAGIC,
    ArchiveError,
    Budget,
    BudgetExceeded,
    CheckedTarInfo,
    CountingReader,
    FileItem,
    GunzipReader,
    HashingReader,
    Walker,
    buffered,
    describe,
    iter_tar,
    normalize,
)

DOCKER_PREFIX = "docker://"
ACCEPTED = ("expected a `docker save` tarball, an OCI image layout directory, an OCI archive "
            "or docker://NAME[:TAG]")
MAX_JSON = 16 * 1024 * 1024
"""Largest manifest, index or config read (real ones are kilobytes)."""
MAX_INDEX_DEPTH = 4
"""Image indexes pointing to indexes: deeper than this is a loop or an attack."""
MAX_OUTER_MEMBERS = 100_000
"""Members of an image tarball itself (a few per layer in practice)."""
MAX_WARNINGS = 100
MAX_TRAILING = 1024 * 1024
"""Bytes after a layer's tar that are still read to check its digest; more is reported instead."""
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_BLOB_PATH = re.compile(r"(?:.*/)?blobs/(sha256|sha512)/([0-9a-f]{64,128})")
_CONFIG_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})(?:\.json)?")
_COMPRESSED = {GZIP_MAGIC: "gzip", ZSTD_MAGIC: "zstd", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}
_LAYER_ERRORS: tuple[type[Exception], ...] = (ArchiveError, *FORMAT_ERRORS)
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what one image may cost; hostile images hit them, real ones should not."""

    max_total_bytes: int = 4 * 1024**3
    """Uncompressed bytes read across the whole image, nested archives included."""
    max_members: int = 500_000
    """Tar and zip members across the whole image."""
    max_ratio: float = 100.0
    """Decompressed/compressed size, per gzip stream or zip entry: above it, a bomb."""
    max_depth: int = 3
    """How deep archives nested in layers are opened (a jar in a tar in a layer is depth 2)."""
    max_nested_size: int = 256 * 1024**2
    """A nested archive larger than this is not opened."""


@dataclass
class ImageScan:
    findings: list[Finding]
    stats: ScanStats
    warnings: list[str] = field(default_factory=list)
    target: str = ""
    """The image as the user named it."""


@dataclass(frozen=True, slots=True)
class _LayerRef:
    ref: str
    """Where the blob is in the image (a checked relative path)."""
    digest: str | None
    """As the manifest names it; legacy ``docker save`` manifests name paths, so there it is the
    config's diff_id, and None only when the config has none."""
    blob_digest: bool
    """True: ``digest`` is the sha256 of the blob as stored; False: of the uncompressed tar."""


@dataclass
class _ImageRefs:
    config_ref: str | None
    config_digest: str | None
    layers: list[_LayerRef]


# -- where the blobs are --------------------------------------------------------------------------


class _Store:
    """Blobs of one image by relative path: a directory or a tar (never extracted)."""

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what the store holds open."""

    def exists(self, ref: str) -> bool:
        raise NotImplementedError

    def size(self, ref: str) -> int:
        raise NotImplementedError

    def open(self, ref: str) -> IO[bytes]:
        raise NotImplementedError

    def read(self, ref: str, what: str, label: str) -> bytes:
        """A small blob (manifest, index, config) whole; SourceError when missing or oversized."""
        if not self.exists(ref):
            raise SourceError(f"{label}: {what} {ref} is missing from the image")
        size = self.size(ref)
        if size > MAX_JSON:
            raise SourceError(f"{label}: {what} {ref} is larger than {MAX_JSON} bytes")
        with self.open(ref) as fh:
            return fh.read(size)  # not MAX_JSON: a read allocates its full size up front


class _DirStore(_Store):
    def __init__(self, root: Path, label: str) -> None:
        self._root = os.path.realpath(root)
        self._label = label

    def _path(self, ref: str) -> str:
        """The file for ``ref``; a symlink may point anywhere, so one leading out is refused."""
        path = os.path.realpath(os.path.join(self._root, ref))
        if os.path.commonpath([path, self._root]) != self._root:
            raise SourceError(f"{self._label}: {ref!r} resolves outside the image directory; "
                              "refusing the image")
        return path

    def exists(self, ref: str) -> bool:
        return os.path.isfile(self._path(ref))

    def size(self, ref: str) -> int:
        return os.path.getsize(self._path(ref))

    def open(self, ref: str) -> IO[bytes]:
        return open(self._path(ref), "rb")


class _TarStore(_Store):
    """Members of an uncompressed image tarball, found by name through one header pass; reading
    one seeks into the file, so nothing but the current member's buffer is in memory."""

    def __init__(self, path: Path, label: str, warnings: list[str]) -> None:
        self._label = label
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            # open for as long as the store lives; CheckedTarInfo bounds what a header may make us read
            self._tar = tarfile.open(fileobj=self._fh, mode="r:", tarinfo=CheckedTarInfo)  # noqa: SIM115
            self._index(warnings)
        except tarfile.TarError as exc:
            self._fh.close()
            raise SourceError(f"{label}: not a tar archive ({exc}); {ACCEPTED}") from exc
        except BaseException:
            self._fh.close()
            raise

    def _index(self, warnings: list[str]) -> None:
        try:
            while (member := self._tar.next()) is not None:
                self._tar.members.clear()  # type: ignore[attr-defined]  # our own index replaces it
                if len(self._members) >= MAX_OUTER_MEMBERS:
                    raise SourceError(f"{self._label}: more than {MAX_OUTER_MEMBERS} members; not an image")
                name, _ = normalize(member.name)
                self._members[name] = member  # a later duplicate wins, as when extracting
        except tarfile.ReadError as exc:
            if not self._members:
                raise
            warnings.append(f"{self._label}: {describe(exc)}; members after "
                            f"{len(self._members)} are not available")

    def close(self) -> None:
        self._fh.close()

    def _resolve(self, ref: str) -> tarfile.TarInfo | None:
        """The regular member ``ref`` names, following links only inside the tarball (Docker's
        legacy layout links duplicate layers to one another)."""
        name = ref
        for _ in range(8):
            member = self._members.get(name)
            if member is None or member.isreg():
                return member
            if member.issym():
                target = posixpath.join(posixpath.dirname(name), member.linkname)
            elif member.islnk():
                target = member.linkname
            else:
                return None
            norm = posixpath.normpath(target)
            if norm.startswith(("../", "/")) or norm == "..":
                raise SourceError(f"{self._label}: {ref!r} links outside the archive ({member.linkname!r}); "
                                  "refusing the image")
            name = norm
        return None

    def exists(self, ref: str) -> bool:
        return self._resolve(ref) is not None

    def size(self, ref: str) -> int:
        member = self._resolve(ref)
        return member.size if member else 0

    def open(self, ref: str) -> IO[bytes]:
        member = self._resolve(ref)
        fh = self._tar.extractfile(member) if member else None
        if fh is None:
            raise SourceError(f"{self._label}: {ref} is missing from the image")
        return fh


def _open_store(path: Path, label: str, warnings: list[str]) -> _Store:
    if not path.exists():
        raise SourceError(f"{label}: no such file or directory")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("index.json", "manifest.json")):
            raise SourceError(f"{label}: not an image directory (no index.json or manifest.json); {ACCEPTED}")
        return _DirStore(path, label)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise SourceError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise SourceError(f"{label}: {kind}-compressed; decompress it first ({ACCEPTED}, uncompressed)")
    return _TarStore(path, label, warnings)


# -- manifests ------------------------------------------------------------------------------------


def _checked_path(ref: object, where: str, label: str) -> str:
    """A relative path from a manifest, refused when it could leave the image (absolute, ``..``)."""
    if not isinstance(ref, str) or not ref:
        raise SourceError(f"{label}: {where}: expected a file name, found {ref!r}")
    if ref.startswith("/") or "\\" in ref or "\0" in ref or ".." in ref.split("/"):
        raise SourceError(f"{label}: {where}: unsafe reference {ref!r} (absolute or '..' path); "
                          "refusing the image")
    return normalize(ref)[0]


def _blob_path(digest: object, where: str, label: str) -> str:
    """``blobs/ALG/HEX`` for a digest; anything but a well-formed digest is refused, so a
    reference can never name a path of its own choosing."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise SourceError(f"{label}: {where}: invalid digest reference {digest!r}; refusing the image")
    alg, _, hexdigest = digest.partition(":")
    return f"blobs/{alg}/{hexdigest}"


def _parse_json(data: bytes, ref: str, what: str, label: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise SourceError(f"{label}: {what} {ref}: not valid JSON ({reason})") from exc


def _load_json(store: _Store, ref: str, what: str, label: str) -> Any:
    return _parse_json(store.read(ref, what, label), ref, what, label)


def _docker_refs(store: _Store, label: str, warnings: list[str]) -> _ImageRefs:
    entries = _load_json(store, "manifest.json", "manifest", label)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise SourceError(f"{label}: manifest.json is not a `docker save` manifest")
    entry = entries[0]
    if len(entries) > 1:
        tags = entry.get("RepoTags") or ["untagged"]
        warnings.append(f"{label}: manifest.json lists {len(entries)} images; scanned the first "
                        f"({', '.join(map(str, tags))})")
    config = _checked_path(entry.get("Config"), "manifest.json Config", label)
    layers_raw = entry.get("Layers")
    if not isinstance(layers_raw, list):
        raise SourceError(f"{label}: manifest.json has no Layers list")
    layers = []
    for i, raw in enumerate(layers_raw):
        ref = _checked_path(raw, f"manifest.json layer {i}", label)
        digest = _named_digest(ref) if _BLOB_PATH.fullmatch(ref) else None  # None: the config's diff_id
        layers.append(_LayerRef(ref, digest, digest is not None))
    return _ImageRefs(config, _named_digest(config), layers)


def _named_digest(ref: str) -> str | None:
    """The digest a blob's file name carries (``blobs/sha256/HEX``, or legacy ``HEX.json``)."""
    blob = _BLOB_PATH.fullmatch(ref)
    if blob:
        return f"{blob.group(1)}:{blob.group(2)}"
    legacy = _CONFIG_NAME.fullmatch(ref)
    return f"sha256:{legacy.group(1)}" if legacy else None


def _platform(desc: dict[str, Any]) -> str:
    plat = desc.get("platform")
    if not isinstance(plat, dict):
        return "unknown platform"
    parts = [str(plat.get("os", "?")), str(plat.get("architecture", "?"))]
    if plat.get("variant"):
        parts.append(str(plat["variant"]))
    return "/".join(parts)


def _is_attestation(desc: dict[str, Any]) -> bool:
    """BuildKit stores provenance/SBOM attestations as pseudo-manifests in the image index."""
    annotations = desc.get("annotations")
    kind = annotations.get("vnd.docker.reference.type") if isinstance(annotations, dict) else None
    if kind == "attestation-manifest":
        return True
    return _platform(desc) == "unknown/unknown"


def _choose(
    store: _Store, index: dict[str, Any], where: str, label: str, warnings: list[str]
) -> dict[str, Any]:
    """The manifest to scan: the only one present, else linux/amd64, else the first (warned)."""
    listed = index.get("manifests")
    if not isinstance(listed, list):
        raise SourceError(f"{label}: {where} has no manifests list")
    descs = [d for d in listed if isinstance(d, dict)]
    for d in descs:  # every reference is checked, not only the chosen one
        _blob_path(d.get("digest"), where, label)
    candidates: dict[str, dict[str, Any]] = {}
    for d in descs:
        if not _is_attestation(d) and store.exists(_blob_path(d["digest"], where, label)):
            candidates.setdefault(d["digest"], d)  # one image under several tags counts once
    if not candidates:
        raise SourceError(f"{label}: {where} lists no image manifest present in the image")
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    amd64 = [d for d in candidates.values() if _platform(d) == "linux/amd64"]
    pick = amd64[0] if amd64 else next(iter(candidates.values()))
    warnings.append(f"{label}: {where} lists {len(candidates)} images; scanned {_platform(pick)} "
                    f"({pick['digest']})")
    return pick


def _oci_refs(store: _Store, label: str, warnings: list[str]) -> _ImageRefs:
    doc = _load_json(store, "index.json", "index", label)
    where = "index.json"
    for _ in range(MAX_INDEX_DEPTH):
        if not isinstance(doc, dict):
            raise SourceError(f"{label}: {where} is not an OCI index or manifest")
        if "manifests" in doc or doc.get("mediaType") in _INDEX_TYPES:
            desc = _choose(store, doc, where, label, warnings)
            where = f"manifest {desc['digest']}"
            doc = _load_json(store, _blob_path(desc["digest"], where, label), "manifest", label)
            continue
        config = doc.get("config")
        layers = doc.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise SourceError(f"{label}: {where} is not an image manifest (no config or layers)")
        refs = []
        for i, desc in enumerate(layers):
            digest = desc.get("digest") if isinstance(desc, dict) else desc
            refs.append(_LayerRef(_blob_path(digest, f"{where} layer {i}", label), str(digest), True))
        config_ref = _blob_path(config.get("digest"), f"{where} config", label)
        return _ImageRefs(config_ref, str(config["digest"]), refs)
    raise SourceError(f"{label}: image indexes nested deeper than {MAX_INDEX_DEPTH}")


def _image_refs(store: _Store, label: str, warnings: list[str]) -> _ImageRefs:
    if store.exists("manifest.json"):
        return _docker_refs(store, label, warnings)
    if store.exists("index.json"):
        return _oci_refs(store, label, warnings)
    raise SourceError(f"{label}: no manifest.json or index.json: not an image; {ACCEPTED}")


# -- what each layer does to the ones below ------------------------------------------------------


@dataclass(slots=True)
class _LayerIndex:
    """The paths one layer adds or removes, enough to tell which lower-layer files it hides
    (the OCI image spec's whiteout rules; Docker's are the same)."""

    files: set[str] = field(default_factory=set)
    """Non-directory entries: replace the same path below and hide anything under it."""
    dirs: set[str] = field(default_factory=set)
    """Directories: merge with a directory below, but replace a file at the same path."""
    removed: set[str] = field(default_factory=set)
    """``.wh.NAME`` targets: NAME and everything under it are gone."""
    opaque: set[str] = field(default_factory=set)
    """Directories holding ``.wh..wh..opq``: what lower layers had inside them is hidden."""

    def add(self, path: str, is_dir: bool) -> None:
        (self.dirs if is_dir else self.files).add(path)

    def whiteout(self, parent: str, base: str) -> None:
        if base == OPAQUE:
            self.opaque.add(parent)
        elif not base.startswith(WHITEOUT + WHITEOUT):  # other .wh..wh.* names are aufs bookkeeping
            name = base[len(WHITEOUT) :]
            if name:
                self.removed.add(f"{parent}/{name}" if parent else name)

    def hides(self, path: str) -> bool:
        """Whether a file at ``path`` in a lower layer is gone once this layer is applied."""
        if path in self.files or path in self.dirs or path in self.removed:
            return True
        while path:
            path = path.rpartition("/")[0]  # ends with "" (the root, which may be opaque)
            if path in self.opaque or path in self.removed or path in self.files:
                return True
        return False


# -- the scan ---------------------------------------------------------------------------------------


class _ImageScanner:
    def __init__(
        self, engine: Engine, store: _Store, label: str, budget: Budget, warnings: list[str]
    ) -> None:
        self.engine = engine
        self.store = store
        self.label = label
        self.budget = budget
        self.stats = ScanStats()
        self.warnings = warnings
        self.dropped = 0
        self.scanned = False
        """Whether anything at all was read: the config, or at least one layer member."""
        self.indexes: list[_LayerIndex] = []
        self.found: list[list[tuple[list[Finding], str]]] = []
        """Per layer: (findings, layer member they came from), marked once every layer is known."""
        self.digests: list[str | None] = []

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self.dropped += 1

    def run(self, refs: _ImageRefs) -> ImageScan:
        findings = self._config(refs)
        layers = refs.layers
        for i, layer in enumerate(layers):
            try:
                self._layer(i, layer)
            except BudgetExceeded as exc:
                self.warn(f"{self.label}: {exc} in layer {i} ({self.digests[i]}); layers from there on "
                          "were not (fully) scanned and deletions by them are not known")
                break
        findings.extend(self._mark_layers())
        if self.dropped:
            self.warnings.append(f"{self.label}: {self.dropped} more warnings not shown")
        if not self.scanned:
            reasons = "; ".join(self.warnings[:3]) or "the image has no config and no layers"
            raise SourceError(f"{self.label}: nothing could be scanned: {reasons}")
        return ImageScan(findings, self.stats, self.warnings, self.label)

    # config and history

    def _config(self, refs: _ImageRefs) -> list[Finding]:
        if refs.config_ref is None:
            return []
        try:
            raw = self.store.read(refs.config_ref, "config", self.label)
            config = _parse_json(raw, refs.config_ref, "config", self.label)
        except SourceError as exc:  # the layers may still be readable
            self.warn(f"{exc}; config, env and history not scanned")
            return []
        if not isinstance(config, dict):
            self.warn(f"{self.label}: config {refs.config_ref} is not a JSON object; not scanned")
            return []
        self.scanned = True
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if refs.config_digest and refs.config_digest.startswith("sha256:") and actual != refs.config_digest:
            self.warn(f"{self.label}: config {refs.config_ref}: sha256 does not match {refs.config_digest} "
                      "(corrupt or altered image)")
        self._fill_diff_ids(refs, config)
        return self._config_findings(config)

    def _fill_diff_ids(self, refs: _ImageRefs, config: dict[str, Any]) -> None:
        """Legacy manifests name layers by path: their digest is the config's diff_id."""
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(refs.layers):
            return
        refs.layers = [
            replace(layer, digest=str(diff_id), blob_digest=False) if layer.digest is None else layer
            for layer, diff_id in zip(refs.layers, diff_ids, strict=True)
        ]

    def _config_findings(self, config: dict[str, Any]) -> list[Finding]:
        """Env, Cmd, Entrypoint, Labels and every history ``created_by`` (where ``RUN`` lines and
        build args end up). Only paths and positions go into findings, never the text itself."""
        inner = config.get("config")
        cfg: dict[str, Any] = inner if isinstance(inner, dict) else {}
        findings = self._env(_env_pairs(cfg.get("Env")))
        texts: list[tuple[str, str]] = []
        for key in ("Cmd", "Entrypoint"):
            value = cfg.get(key)
            if isinstance(value, list):
                texts.append((f"config:{key}", " ".join(map(str, value))))
            elif isinstance(value, str):
                texts.append((f"config:{key}", value))
        labels = cfg.get("Labels")
        if isinstance(labels, dict) and labels:
            texts.append(("config:Labels", "".join(f"{k}={v}\n" for k, v in labels.items())))
        history = config.get("history")
        for n, entry in enumerate(history if isinstance(history, list) else []):
            created_by = entry.get("created_by") if isinstance(entry, dict) else None
            if isinstance(created_by, str) and created_by:
                texts.append((f"history:{n}", created_by))
        for path, text in texts:
            data = text.encode("utf-8", "replace")
            self.stats.files += 1
            self.stats.bytes += len(data)
            findings.extend(self.engine.scan(data, path, "image"))
        return findings

    def _env(self, variables: list[tuple[str, str]]) -> list[Finding]:
        """``ENV`` values get the environment scan's variable-name heuristic too: an image config's
        Env is exactly what the container's processes will see."""
        from scanners.sources.env import scan_variables

        self.stats.files += len(variables)
        self.stats.bytes += sum(len(n) + len(v) + 1 for n, v in variables)
        return list(scan_variables(self.engine, variables, source="image", extra={"in": "config.Env"}))

    # layers

    def _layer(self, i: int, layer: _LayerRef) -> None:
        self.digests.append(layer.digest)
        index = _LayerIndex()
        self.indexes.append(index)
        found: list[tuple[list[Finding], str]] = []
        self.found.append(found)
        label = f"layer {i} ({layer.digest or layer.ref})"
        if not self.store.exists(layer.ref):
            self.warn(f"{self.label}: {label}: blob {layer.ref} is missing from the image; not scanned")
            return
        scope = object()
        try:
            with self.store.open(layer.ref) as fh:
                hashing = HashingReader(fh)
                raw = buffered(hashing)
                magic = raw.peek(4)[:4]
                if magic == ZSTD_MAGIC:
                    self.warn(f"{self.label}: {label}: zstd compression not supported; not scanned")
                    return
                if not magic:  # an empty blob: an empty layer
                    self.scanned = True
                    return
                gzipped = magic[:2] == GZIP_MAGIC  # by content: media types and names can lie
                stream = self._decoded(raw, self.store.size(layer.ref), gzipped, scope)
                walker = Walker(self.budget, self.stats, lambda m: self.warn(f"{self.label}: {label}: {m}"))
                for item in self._walk(stream, index, walker, label, scope):
                    hits = self.engine.scan(item.data, item.path, "image")
                    self.stats.files += 1
                    self.stats.bytes += len(item.data)
                    if hits:
                        found.append((hits, item.top))
                self._verify(i, layer, label, raw, hashing, gzipped)
        except _LAYER_ERRORS as exc:
            self.warn(f"{self.label}: {label}: {describe(exc)}; the rest of this layer was not scanned")

    def _decoded(self, raw: io.BufferedReader, size: int, gzipped: bool, scope: object) -> IO[bytes]:
        """The layer's tar stream, every byte of it charged to the budget."""
        if gzipped:
            return buffered(GunzipReader(raw, self.budget, size, scope))
        return buffered(CountingReader(raw, self.budget))

    def _walk(
        self, stream: IO[bytes], index: _LayerIndex, walker: Walker, label: str, scope: object
    ) -> Iterator[FileItem]:
        """Regular files of one layer; whiteouts and every path are recorded in ``index``."""
        for tar, member in iter_tar(stream, self.budget):
            self.scanned = True
            name, escaped = normalize(member.name)
            if escaped:
                self.warn(f"{self.label}: {label}: member {member.name!r} leaves the image root; "
                          f"reported as {name!r}")
            if not name:
                continue
            parent, _, base = name.rpartition("/")
            if base.startswith(WHITEOUT):  # a marker, never content
                index.whiteout(parent, base)
                continue
            index.add(name, member.isdir())
            if member.issym() or member.islnk():  # never followed; a hard link's target is scanned itself
                self.stats.skip("symlink" if member.issym() else "hardlink")
                continue
            if not member.isreg():
                continue
            reader = tar.extractfile(member)
            if reader is not None:
                yield from walker.member(name, name, member.size, reader, 0, scope)

    def _verify(
        self, i: int, layer: _LayerRef, label: str, raw: io.BufferedReader, hashing: HashingReader,
        gzipped: bool,
    ) -> None:
        """Check the blob against its digest once the tar is read, reading the few bytes after its
        end (padding, the gzip trailer). A diff_id is the hash of the uncompressed tar, so it is
        checked only for uncompressed blobs."""
        trailing = self.store.size(layer.ref) - hashing.size
        if trailing > MAX_TRAILING:
            self.warn(f"{self.label}: {label}: {trailing} bytes after the end of the layer's archive "
                      "were not scanned")
            return
        while raw.read(CHUNK):
            pass
        actual = "sha256:" + hashing.sha256.hexdigest()
        if layer.digest is None:
            self.digests[i] = actual
            return
        checkable = (layer.blob_digest or not gzipped) and layer.digest.startswith("sha256:")
        if checkable and actual != layer.digest:
            self.warn(f"{self.label}: {label}: content sha256 does not match the digest "
                      "(corrupt or altered image)")

    def _mark_layers(self) -> list[Finding]:
        """Attach each layer finding's layer object, now that every later layer's deletions are known."""
        out: list[Finding] = []
        for i, found in enumerate(self.found):
            later = self.indexes[i + 1 :]
            for hits, top in found:
                deleted = any(index.hides(top) for index in later)
                for f in hits:
                    layer = {"digest": self.digests[i], "index": i, "deleted": deleted}
                    out.append(replace(f, source="image", layer=layer))
        return out


def _env_pairs(env: object) -> list[tuple[str, str]]:
    if not isinstance(env, list):
        return []
    pairs = []
    for entry in env:
        if isinstance(entry, str) and entry:
            name, _, value = entry.partition("=")
            pairs.append((name, value))
    return pairs


def _budget(limits: ImageLimits, max_file_size: int) -> Budget:
    return Budget(limits.max_total_bytes, limits.max_members, limits.max_ratio, limits.max_depth,
                  limits.max_nested_size, max_file_size)


def _scan_path(engine: Engine, path: Path, label: str, budget: Budget) -> ImageScan:
    warnings: list[str] = []
    with _open_store(path, label, warnings) as store:
        refs = _image_refs(store, label, warnings)
        return _ImageScanner(engine, store, label, budget, warnings).run(refs)


def _docker_name(target: str) -> str:
    name = target[len(DOCKER_PREFIX) :]
    if not name or name.startswith("-") or any(c.isspace() or not c.isprintable() for c in name):
        raise SourceError(f"{target}: not an image name (expected docker://NAME[:TAG])")
    return name


def _scan_docker(engine: Engine, target: str, budget: Budget) -> ImageScan:
    """Export with ``docker image save`` into a fresh 0700 temp dir (the tarball holds whatever
    secrets the image does), scan it under the user's name for it, and delete it."""
    name = _docker_name(target)
    tmp = tempfile.mkdtemp(prefix="depthguard-image-")
    try:
        out = os.path.join(tmp, "image.tar")
        try:
            proc = subprocess.run(["docker", "image", "save", "-o", out, "--", name],
                                  capture_output=True, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise SourceError(f"{target}: cannot export the image: docker: command not found") from exc
        if proc.returncode != 0:
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[0] if lines else f"docker image save exited with status {proc.returncode}"
            raise SourceError(f"{target}: cannot export the image: {reason}")
        return _scan_path(engine, Path(out), target, budget)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scan_image(
    engine: Engine, target: str, *, max_file_size: int = 10 * 1024**2, limits: ImageLimits | None = None
) -> ImageScan:
    """Findings in every layer (``layer={digest, index, deleted}``), the config (``env:NAME``,
    ``config:Cmd``, ``config:Entrypoint``, ``config:Labels``) and the history (``history:N``).

    Raises SourceError when the target is missing, is not an image, references paths outside itself,
    or when nothing at all could be read; every other problem is a warning in the result."""
    budget = _budget(limits or ImageLimits(), max_file_size)
    if target.startswith(DOCKER_PREFIX):
        return _scan_docker(engine, target, budget)
    return _scan_path(engine, Path(target), target, budget)


__all__ = ["ImageLimits", "ImageScan", "scan_image"]
