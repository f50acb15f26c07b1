"""Where an image's parts are: the manifest, config and layer blobs of a ``docker save`` tarball
(legacy and Docker >= 25 layouts), an OCI image layout directory, or an OCI archive.

Images are untrusted input, so every reference a manifest or index makes is checked before anything
is opened: a path that leaves the archive (``../``, absolute, a symlink out of the layout), a malformed
digest or an index nested too deep refuses the image with a :class:`SourceError` naming the
reference. Only JSON documents are read here, bounded in size; layers are opened for streaming.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from depthguard.errors import SourceError
from scanners.sources.archive import GZIP_MAGIC, ZSTD_MAGIC, CheckedTarInfo, describe, normalize

ACCEPTED = ("expected a `docker save` tarball, an OCI image layout directory, an OCI archive "
            "or docker://NAME[:TAG]")
MAX_JSON = 16 * 1024 * 1024
"""Largest manifest, index or config read (real ones are kilobytes)."""
MAX_INDEX_DEPTH = 4
"""Image indexes pointing to indexes: deeper than this is a loop or an attack."""
MAX_OUTER_MEMBERS = 100_000
"""Members of an image tarball itself (a few per layer in practice)."""
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_BLOB_PATH = re.compile(r"(?:.*/)?blobs/(sha256|sha512)/([0-9a-f]{64,128})")
_CONFIG_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})(?:\.json)?")
_COMPRESSED = {GZIP_MAGIC: "gzip", ZSTD_MAGIC: "zstd", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True, slots=True)
class LayerRef:
    ref: str
    """Where the blob is in the image (a checked relative path)."""
    digest: str | None
    """As the manifest names it; legacy ``docker save`` manifests name paths, so there it is the
    config's diff_id, and None only when the config has none."""
    blob_digest: bool
    """True: ``digest`` is the sha256 of the blob as stored; False: of the uncompressed tar."""


@dataclass
class ImageRefs:
    config_ref: str | None
    config_digest: str | None
    layers: list[LayerRef]


# -- where the blobs are --------------------------------------------------------------------------


class Store:
    """Blobs of one image by relative path: a directory or a tar (never extracted)."""

    def __enter__(self) -> Store:
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


class DirStore(Store):
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


class TarStore(Store):
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


def open_store(path: Path, label: str, warnings: list[str]) -> Store:
    if not path.exists():
        raise SourceError(f"{label}: no such file or directory")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("index.json", "manifest.json")):
            raise SourceError(f"{label}: not an image directory (no index.json or manifest.json); {ACCEPTED}")
        return DirStore(path, label)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise SourceError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise SourceError(f"{label}: {kind}-compressed; decompress it first ({ACCEPTED}, uncompressed)")
    return TarStore(path, label, warnings)


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


def parse_json(data: bytes, ref: str, what: str, label: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise SourceError(f"{label}: {what} {ref}: not valid JSON ({reason})") from exc


def _load_json(store: Store, ref: str, what: str, label: str) -> Any:
    return parse_json(store.read(ref, what, label), ref, what, label)


def _docker_refs(store: Store, label: str, warnings: list[str]) -> ImageRefs:
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
        layers.append(LayerRef(ref, digest, digest is not None))
    return ImageRefs(config, _named_digest(config), layers)


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
    store: Store, index: dict[str, Any], where: str, label: str, warnings: list[str]
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


def _oci_refs(store: Store, label: str, warnings: list[str]) -> ImageRefs:
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
            refs.append(LayerRef(_blob_path(digest, f"{where} layer {i}", label), str(digest), True))
        config_ref = _blob_path(config.get("digest"), f"{where} config", label)
        return ImageRefs(config_ref, str(config["digest"]), refs)
    raise SourceError(f"{label}: image indexes nested deeper than {MAX_INDEX_DEPTH}")


def image_refs(store: Store, label: str, warnings: list[str]) -> ImageRefs:
    if store.exists("manifest.json"):
        return _docker_refs(store, label, warnings)
    if store.exists("index.json"):
        return _oci_refs(store, label, warnings)
    raise SourceError(f"{label}: no manifest.json or index.json: not an image; {ACCEPTED}")


# -- what each layer does to the ones below ------------------------------------------------------
