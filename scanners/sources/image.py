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
import os
import shutil
import subprocess
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
from scanners.sources.image_layout import ImageRefs, LayerRef, Store, image_refs, open_store, parse_json

DOCKER_PREFIX = "docker://"
MAX_WARNINGS = 100
MAX_TRAILING = 1024 * 1024
"""Bytes after a layer's tar that are still read to check its digest; more is reported instead."""
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_LAYER_ERRORS: tuple[type[Exception], ...] = (ArchiveError, *FORMAT_ERRORS)


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
        self, engine: Engine, store: Store, label: str, budget: Budget, warnings: list[str]
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

    def run(self, refs: ImageRefs) -> ImageScan:
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

    def _config(self, refs: ImageRefs) -> list[Finding]:
        if refs.config_ref is None:
            return []
        try:
            raw = self.store.read(refs.config_ref, "config", self.label)
            config = parse_json(raw, refs.config_ref, "config", self.label)
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

    def _fill_diff_ids(self, refs: ImageRefs, config: dict[str, Any]) -> None:
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

    def _layer(self, i: int, layer: LayerRef) -> None:
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
        self, i: int, layer: LayerRef, label: str, raw: io.BufferedReader, hashing: HashingReader,
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
    with open_store(path, label, warnings) as store:
        refs = image_refs(store, label, warnings)
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
