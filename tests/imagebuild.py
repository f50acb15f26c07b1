"""Container images for tests, written with the stdlib only: no Docker needed.

The images are real: manifest.json / index.json / oci-layout, the config (``rootfs.diff_ids``,
``history``, ``config.Env/Cmd/Entrypoint/Labels``) and every sha256 digest agree, laid out the way
``docker save`` (legacy and Docker >= 25), ``skopeo copy oci:`` and ``oci-archive:`` write them.
Hostile pieces (traversal references and members, a gzip bomb, corrupt and truncated layers) are
built on purpose by the helpers at the end. Secrets come from tests.secretgen, never real ones.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

Json = Any
Hook = Callable[[Json], Json]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- layer contents -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One tar entry; ``name`` is written verbatim (so it may be hostile)."""

    name: str
    data: bytes = b""
    kind: Literal["file", "dir", "symlink", "hardlink"] = "file"
    target: str = ""


def file(name: str, data: bytes | str) -> Member:
    return Member(name, data.encode() if isinstance(data, str) else data)


def directory(name: str) -> Member:
    return Member(name, kind="dir")


def symlink(name: str, target: str) -> Member:
    return Member(name, kind="symlink", target=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, kind="hardlink", target=target)


def whiteout(path: str) -> Member:
    """Docker's deletion marker: ``dir/.wh.name`` removes ``dir/name`` from lower layers."""
    parent, _, base = path.rpartition("/")
    return Member(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(dirpath: str) -> Member:
    """Hides everything lower layers had in ``dirpath``."""
    return Member(f"{dirpath}/.wh..wh..opq")


def _tarinfo(m: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(m.name)
    info.mtime = 0
    info.mode = 0o755 if m.kind == "dir" else 0o644
    if m.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif m.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, m.target
    elif m.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, m.target
    else:
        info.size = len(m.data)
    return info


def tar_bytes(members: Iterable[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(_tarinfo(m), io.BytesIO(m.data) if m.kind == "file" else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zip_bytes(files: dict[str, bytes | str]) -> bytes:
    """A zip (jar, war, whl: same format) in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass(frozen=True)
class Blob:
    """One layer as stored: its bytes (or the file holding them, for big ones) and its digests."""

    media_type: str
    digest: str
    """sha256 of the stored bytes (what an OCI manifest names)."""
    diff_id: str
    """sha256 of the uncompressed tar (what the config's rootfs.diff_ids names)."""
    size: int
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


def layer(*members: Member, compress: bool = True) -> Blob:
    """A layer from its members, gzip'd (the usual) or a plain tar."""
    tar = tar_bytes(members)
    data = gzip_bytes(tar) if compress else tar
    return Blob(LAYER_GZIP if compress else LAYER_TAR, sha256(data), sha256(tar), len(data), data)


def raw_layer(data: bytes, *, media_type: str = LAYER_GZIP, diff_id: str | None = None) -> Blob:
    """A layer blob with arbitrary bytes: corrupt, truncated, or in a format not supported."""
    return Blob(media_type, sha256(data), diff_id or sha256(data), len(data), data)


def truncated(blob: Blob, keep: int) -> Blob:
    """``blob`` cut after ``keep`` bytes, its digests those of the complete blob (as a broken
    download leaves it)."""
    data = blob.read()[:keep]
    return Blob(blob.media_type, blob.digest, blob.diff_id, len(data), data)


def gzip_bomb_layer(path: Path, size: int = 256 * MiB, name: str = "var/lib/zeros.img") -> Blob:
    """A gzip'd layer holding one file of ``size`` zero bytes (about 1000:1), written to ``path``
    chunk by chunk so that neither the builder nor the test ever holds the expanded content."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    header = info.tobuf(tarfile.PAX_FORMAT)
    diff = hashlib.sha256()
    chunk = bytes(MiB)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        def put(data: bytes) -> None:
            diff.update(data)
            gz.write(data)

        put(header)
        for _ in range(size // MiB):
            put(chunk)
        put(bytes(size % MiB))
        put(bytes(-size % tarfile.BLOCKSIZE))
        put(bytes(2 * tarfile.BLOCKSIZE))
    stored = path.read_bytes()
    return Blob(LAYER_GZIP, sha256(stored), "sha256:" + diff.hexdigest(), len(stored), path=path)


def oversized_longname_layer(size: int = 2 * MiB) -> Blob:
    """A plain tar whose first header is a GNU long name claiming ``size`` bytes (tarfile would
    read it whole into memory), followed by an ordinary file."""
    longname = tarfile.TarInfo("././@LongLink")
    longname.type, longname.size, longname.mtime = tarfile.GNUTYPE_LONGNAME, size, 0
    body = longname.tobuf(tarfile.GNU_FORMAT) + b"a" * size + bytes(-size % tarfile.BLOCKSIZE)
    tar = body + tar_bytes([file("etc/after", "ok\n")])
    return raw_layer(tar, media_type=LAYER_TAR)


def multi_member_gzip(tar: bytes, parts: int = 3) -> bytes:
    """One tar compressed as several gzip members back to back, as pigz and appends produce."""
    step = -(-len(tar) // parts)
    return b"".join(gzip_bytes(tar[i : i + step]) for i in range(0, len(tar), step))


# -- images ---------------------------------------------------------------------------------------


@dataclass
class Image:
    """An image's layers and config. ``history`` holds the ``created_by`` lines."""

    layers: list[Blob]
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    platform: tuple[str, str] = ("linux", "amd64")

    def config(self) -> bytes:
        cfg: dict[str, Any] = {"Env": self.env}
        if self.cmd is not None:
            cfg["Cmd"] = self.cmd
        if self.entrypoint is not None:
            cfg["Entrypoint"] = self.entrypoint
        if self.labels:
            cfg["Labels"] = self.labels
        doc = {
            "architecture": self.platform[1],
            "os": self.platform[0],
            "created": "2026-01-01T00:00:00Z",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in self.layers]},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": line} for line in self.history],
        }
        return json.dumps(doc, indent=1).encode()

    def manifest(self) -> bytes:
        config = self.config()
        return json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in self.layers],
        }).encode()


class _Sink:
    """Where an image's files go: a directory, or an uncompressed tar."""

    def put(self, name: str, data: bytes | Blob) -> None:
        raise NotImplementedError


class _DirSink(_Sink):
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes | Blob) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Blob) and data.path is not None:
            with open(data.path, "rb") as src, open(path, "wb") as dst:
                while chunk := src.read(MiB):
                    dst.write(chunk)
        else:
            path.write_bytes(data.read() if isinstance(data, Blob) else data)


class _TarSink(_Sink):
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar

    def put(self, name: str, data: bytes | Blob) -> None:
        info = tarfile.TarInfo(name)
        info.mtime, info.mode = 0, 0o644
        if isinstance(data, Blob) and data.path is not None:
            info.size = data.size
            with open(data.path, "rb") as src:
                self.tar.addfile(info, src)
            return
        raw = data.read() if isinstance(data, Blob) else data
        info.size = len(raw)
        self.tar.addfile(info, io.BytesIO(raw))

    def link(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
        self.tar.addfile(info)


def _blob_name(digest: str) -> str:
    alg, _, hexdigest = digest.partition(":")
    return f"blobs/{alg}/{hexdigest}"


def _write_oci(sink: _Sink, images: Sequence[Image], hook: Hook | None) -> None:
    """Blobs plus index.json and oci-layout; several images go through an image index."""
    descriptors = []
    for image in images:
        config, manifest = image.config(), image.manifest()
        sink.put(_blob_name(sha256(config)), config)
        for blob in image.layers:
            sink.put(_blob_name(blob.digest), blob)
        sink.put(_blob_name(sha256(manifest)), manifest)
        descriptors.append({"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
                            "platform": {"os": image.platform[0], "architecture": image.platform[1]}})
    if len(images) > 1:
        multi = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}).encode()
        sink.put(_blob_name(sha256(multi)), multi)
        descriptors = [{"mediaType": OCI_INDEX, "digest": sha256(multi), "size": len(multi)}]
    descriptors[0]["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    index: Json = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    if hook is not None:
        index = hook(index)
    sink.put("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    sink.put("index.json", json.dumps(index).encode())


def write_oci_layout(root: Path, *images: Image, hook: Hook | None = None) -> Path:
    """An OCI image layout directory (``skopeo copy ... oci:DIR``). ``hook`` may rewrite index.json."""
    root.mkdir(parents=True, exist_ok=True)
    _write_oci(_DirSink(root), images, hook)
    return root


def write_oci_archive(path: Path, *images: Image, hook: Hook | None = None) -> Path:
    """The same layout inside a tar (``oci-archive:``)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _write_oci(_TarSink(tar), images, hook)
    return path


def write_docker_save(
    path: Path,
    image: Image,
    *,
    layout: Literal["legacy", "oci"] = "legacy",
    tags: Sequence[str] = ("app:latest",),
    hook: Hook | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A ``docker save`` tarball.

    ``legacy``: ``<id>/layer.tar`` + ``<config-hex>.json`` + manifest.json + repositories (Docker
    < 25); a layer identical to an earlier one is a symlink to it, as Docker writes it. ``oci``:
    Docker >= 25, blobs/sha256/* with index.json and oci-layout beside manifest.json. ``hook`` may
    rewrite manifest.json (hostile references); ``extra`` adds members verbatim (hostile names)."""
    config = image.config()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        sink = _TarSink(tar)
        if layout == "oci":
            _write_oci(sink, [image], None)
            config_ref = _blob_name(sha256(config))
            layer_refs = [_blob_name(b.digest) for b in image.layers]
        else:
            config_ref = sha256(config).partition(":")[2] + ".json"
            sink.put(config_ref, config)
            layer_refs = []
            first: dict[str, str] = {}
            for i, blob in enumerate(image.layers):
                layer_id = hashlib.sha256(f"{i}:{blob.diff_id}".encode()).hexdigest()
                ref = f"{layer_id}/layer.tar"
                if blob.digest in first:
                    sink.link(ref, f"../{first[blob.digest]}")
                else:
                    first[blob.digest] = ref
                    sink.put(ref, blob)
                sink.put(f"{layer_id}/VERSION", b"1.0")
                layer_refs.append(ref)
        manifest: Json = [{"Config": config_ref, "RepoTags": list(tags), "Layers": layer_refs}]
        if hook is not None:
            manifest = hook(manifest)
        sink.put("manifest.json", json.dumps(manifest).encode())
        sink.put("repositories", json.dumps({t.split(":")[0]: {} for t in tags}).encode())
        for name, data in (extra or {}).items():
            sink.put(name, data)
    return path
