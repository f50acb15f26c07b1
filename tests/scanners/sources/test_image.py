"""Image scanning against real images built in temp dirs (tests/imagebuild.py): every target form,
whiteouts, nested archives, dedupe, and hostile images (traversal, bombs, corrupt layers, limits)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import pytest

from depthguard.errors import SourceError
from scanners.engine import Engine
from scanners.finding import Finding
from scanners.sources.archive import ZSTD_MAGIC
from scanners.sources.image import ImageLimits, ImageScan, scan_image
from tests.imagebuild import (
    LAYER_GZIP,
    LAYER_ZSTD,
    Blob,
    Image,
    MiB,
    directory,
    file,
    gzip_bomb_layer,
    gzip_bytes,
    hardlink,
    layer,
    multi_member_gzip,
    opaque,
    oversized_longname_layer,
    raw_layer,
    sha256,
    symlink,
    tar_bytes,
    truncated,
    whiteout,
    write_docker_save,
    write_oci_archive,
    write_oci_layout,
    zip_bytes,
)
from tests.secretgen import github_token

pytestmark = pytest.mark.integration


@pytest.fixture()
def engine(python_engine: Engine) -> Engine:
    return python_engine


def scan(engine: Engine, target: Path | str, **kwargs: object) -> ImageScan:
    return scan_image(engine, str(target), **kwargs)  # type: ignore[arg-type]


def one(result: ImageScan, secret: str) -> Finding:
    hits = [f for f in result.findings if f.secret == secret]
    assert len(hits) == 1, [(f.path, f.layer) for f in hits]
    return hits[0]


def secrets_found(result: ImageScan) -> set[str]:
    return {f.secret for f in result.findings}


def assert_no_leak(result: ImageScan, secrets: list[str]) -> None:
    """A secret may only ever appear in a finding's ``secret`` field: not in paths, extras, warnings."""
    for f in result.findings:
        shown = json.dumps({k: v for k, v in f.to_dict(show_secrets=True).items() if k != "secret"})
        assert not any(s in shown for s in secrets), f.path
    assert not any(s in w for s in secrets for w in result.warnings)


# -- the acceptance case ----------------------------------------------------------------------------


def acceptance_image() -> tuple[Image, Blob, list[str]]:
    """Layer 1 adds app/.env, layer 2 deletes it; ENV and a RUN line (build arg) hold the others."""
    dotenv, env_secret, run_secret = github_token(), github_token(), github_token()
    base = layer(directory("app"), file("app/main.py", "print('hello')\n"),
                 file("app/.env", f"DEBUG=1\nGITHUB_TOKEN={dotenv}\n"), compress=False)
    cleanup = layer(whiteout("app/.env"), compress=False)
    image = Image(
        [base, cleanup],
        env=["PATH=/usr/local/bin:/usr/bin:/bin", f"API_TOKEN={env_secret}"],
        history=["COPY app /app # buildkit",
                 f"RUN |1 GH_TOKEN={run_secret} /bin/sh -c echo $GH_TOKEN > /dev/null # buildkit",
                 "RUN /bin/sh -c rm /app/.env # buildkit"],
        cmd=["python", "/app/main.py"],
    )
    return image, base, [dotenv, env_secret, run_secret]


def test_acceptance_deleted_dotenv_env_and_history_secret(engine: Engine, tmp_path: Path) -> None:
    image, base, (dotenv, env_secret, run_secret) = acceptance_image()
    result = scan(engine, write_docker_save(tmp_path / "image.tar", image))

    deleted = one(result, dotenv)
    assert deleted.path == "app/.env" and deleted.line == 2 and deleted.source == "image"
    assert deleted.layer == {"digest": base.diff_id, "index": 0, "deleted": True}
    env = one(result, env_secret)
    assert (env.path, env.layer, env.source) == ("env:API_TOKEN", None, "image")
    assert env.extra["in"] == "config.Env"
    run = one(result, run_secret)
    assert (run.path, run.layer, run.source) == ("history:1", None, "image")
    assert len(result.findings) == 3 and result.warnings == []
    assert result.target == str(tmp_path / "image.tar")
    assert_no_leak(result, [dotenv, env_secret, run_secret])


def test_acceptance_through_the_cli(tmp_path: Path) -> None:
    image, base, (dotenv, env_secret, run_secret) = acceptance_image()
    target = write_docker_save(tmp_path / "image.tar", image)
    proc = subprocess.run(
        [sys.executable, "-m", "depthguard", "scan", "image", str(target), "-f", "json", "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    by_path = {f["path"]: f for f in report["findings"]}
    assert by_path["app/.env"]["layer"] == {"digest": base.diff_id, "index": 0, "deleted": True}
    assert by_path["env:API_TOKEN"]["layer"] is None and by_path["history:1"]["layer"] is None
    for secret in (dotenv, env_secret, run_secret):  # redacted unless --show-secrets
        assert secret not in proc.stdout and secret not in proc.stderr


# -- every target form ---------------------------------------------------------------------------------


def simple_image() -> tuple[Image, Blob, Blob, str, str]:
    first_secret, second_secret = github_token(), github_token()
    first = layer(file("etc/app.conf", f"token: {first_secret}\n"))
    second = layer(file("srv/run.sh", f"export GH={second_secret}\n"), compress=False)
    return Image([first, second]), first, second, first_secret, second_secret


@pytest.mark.parametrize("form", ["docker-save-legacy", "docker-save-oci", "oci-layout", "oci-archive"])
def test_every_target_form(engine: Engine, tmp_path: Path, form: str) -> None:
    image, first, second, first_secret, second_secret = simple_image()
    if form == "docker-save-legacy":
        target = write_docker_save(tmp_path / "image.tar", image)
        digests = [first.diff_id, second.diff_id]  # legacy manifests name paths: the diff_ids
    elif form == "docker-save-oci":
        target = write_docker_save(tmp_path / "image.tar", image, layout="oci")
        digests = [first.digest, second.digest]
    elif form == "oci-layout":
        target = write_oci_layout(tmp_path / "layout", image)
        digests = [first.digest, second.digest]
    else:
        target = write_oci_archive(tmp_path / "image.oci.tar", image)
        digests = [first.digest, second.digest]
    result = scan(engine, target)
    assert result.warnings == []
    a, b = one(result, first_secret), one(result, second_secret)
    assert (a.path, a.layer) == ("etc/app.conf", {"digest": digests[0], "index": 0, "deleted": False})
    assert (b.path, b.layer) == ("srv/run.sh", {"digest": digests[1], "index": 1, "deleted": False})
    assert result.stats.files >= 2


def test_image_index_picks_linux_amd64_and_says_so(engine: Engine, tmp_path: Path) -> None:
    arm_secret, amd_secret = github_token(), github_token()
    arm = Image([layer(file("app/key", f"k={arm_secret}\n"))], platform=("linux", "arm64"))
    amd = Image([layer(file("app/key", f"k={amd_secret}\n"))], platform=("linux", "amd64"))
    result = scan(engine, write_oci_layout(tmp_path / "layout", arm, amd))
    assert secrets_found(result) == {amd_secret}
    assert any("2 images" in w and "linux/amd64" in w for w in result.warnings)


def test_config_cmd_entrypoint_and_labels(engine: Engine, tmp_path: Path) -> None:
    cmd, entry, label = github_token(), github_token(), github_token()
    image = Image([layer(file("README", "nothing here\n"))], cmd=["serve", "--token", cmd],
                  entrypoint=["/bin/sh", "-c", f"GH={entry} exec app"], labels={"ci.token": label, "a": "b"})
    result = scan(engine, write_oci_layout(tmp_path / "layout", image))
    assert (one(result, cmd).path, one(result, entry).path, one(result, label).path) == (
        "config:Cmd", "config:Entrypoint", "config:Labels")
    assert all(f.layer is None and f.source == "image" for f in result.findings)
    assert_no_leak(result, [cmd, entry, label])


# -- whiteouts and replacement ----------------------------------------------------------------------


def test_opaque_whiteout_hides_everything_below_in_that_dir(engine: Engine, tmp_path: Path) -> None:
    inside, deeper, beside, new = (github_token() for _ in range(4))
    lower = layer(file("etc/app/a.conf", f"t={inside}\n"), file("etc/app/sub/b.conf", f"t={deeper}\n"),
                  file("etc/other.conf", f"t={beside}\n"))
    upper = layer(directory("etc/app"), opaque("etc/app"), file("etc/app/new.conf", f"t={new}\n"))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lower, upper])))
    assert one(result, inside).layer == {"digest": lower.digest, "index": 0, "deleted": True}
    assert one(result, deeper).layer["deleted"] is True  # type: ignore[index]
    assert one(result, beside).layer["deleted"] is False  # type: ignore[index]
    assert one(result, new).layer == {"digest": upper.digest, "index": 1, "deleted": False}
    assert not any(".wh." in f.path for f in result.findings)


def test_whiteout_of_a_parent_directory_deletes_its_files(engine: Engine, tmp_path: Path) -> None:
    secret, kept = github_token(), github_token()
    lower = layer(file("srv/cfg/deep/x.env", f"T={secret}\n"), file("srv/cfgs.env", f"T={kept}\n"))
    middle = layer(file("var/log/empty", ""))
    upper = layer(whiteout("srv/cfg"))
    result = scan(engine, write_docker_save(tmp_path / "image.tar", Image([lower, middle, upper])))
    assert one(result, secret).layer["deleted"] is True  # type: ignore[index]
    assert one(result, kept).layer["deleted"] is False  # type: ignore[index]  # a sibling, not a child


def test_replaced_file_is_deleted_and_its_replacement_is_not(engine: Engine, tmp_path: Path) -> None:
    old, new = github_token(), github_token()
    first = layer(file("app/config.yml", f"token: {old}\n"))
    second = layer(file("app/config.yml", f"token: {new}\n"))
    result = scan(engine, write_oci_archive(tmp_path / "image.tar", Image([first, second])))
    assert one(result, old).layer == {"digest": first.digest, "index": 0, "deleted": True}
    assert one(result, new).layer == {"digest": second.digest, "index": 1, "deleted": False}


def test_identical_layers_linked_in_a_legacy_save_are_both_scanned(engine: Engine, tmp_path: Path) -> None:
    secret = github_token()
    same = layer(file("app/.npmrc", f"//registry/:_authToken={secret}\n"), compress=False)
    target = write_docker_save(tmp_path / "image.tar", Image([same, same]))
    with tarfile.open(target) as tar:
        assert any(m.issym() for m in tar.getmembers())  # the second layer.tar is a link to the first
    result = scan(engine, target)
    marks = sorted((f.layer["index"], f.layer["deleted"]) for f in result.findings)  # type: ignore[index]
    assert marks == [(0, True), (1, False)]


def test_symlinks_and_hard_links_are_not_followed(engine: Engine, tmp_path: Path) -> None:
    inside, outside = github_token(), github_token()
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text(f"TOKEN={outside}\n")
    lay = layer(file("app/.env", f"TOKEN={inside}\n"), hardlink("app/copy.env", "app/.env"),
                symlink("app/host.env", str(host_file)),
                symlink("app/up.env", "../../../../" + str(host_file)))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay])))
    assert secrets_found(result) == {inside}
    assert one(result, inside).path == "app/.env"
    assert result.stats.skipped["symlink"] == 2 and result.stats.skipped["hardlink"] == 1


# -- nested archives, dedupe, sizes -----------------------------------------------------------------


def nested_layer() -> tuple[Blob, str, str, str]:
    props, inner_secret, tgz_secret = github_token(), github_token(), github_token()
    inner = zip_bytes({"conf/x.properties": f"token={inner_secret}\n"})
    jar = zip_bytes({"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\n",
                     "BOOT-INF/classes/application.properties": f"github.token={props}\n",
                     "BOOT-INF/lib/inner.jar": inner})
    tgz = gzip_bytes(tar_bytes([file("etc/creds", f"GH={tgz_secret}\n")]))
    lay = layer(file("opt/app.jar", jar), file("srv/bundle.data", tgz),
                file("usr/share/doc/x.gz", gzip_bytes(b"x\n")))
    return lay, props, inner_secret, tgz_secret


def test_nested_archives_are_opened_with_bang_paths(engine: Engine, tmp_path: Path) -> None:
    lay, props, inner_secret, tgz_secret = nested_layer()
    later = layer(whiteout("opt/app.jar"))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay, later])))
    assert one(result, props).path == "opt/app.jar!/BOOT-INF/classes/application.properties"
    assert one(result, inner_secret).path == "opt/app.jar!/BOOT-INF/lib/inner.jar!/conf/x.properties"
    assert one(result, tgz_secret).path == "srv/bundle.data!/etc/creds"  # detected by magic, not name
    assert one(result, props).layer["deleted"] is True  # type: ignore[index]  # the jar was deleted
    assert one(result, tgz_secret).layer["deleted"] is False  # type: ignore[index]


@pytest.mark.parametrize(("depth", "found", "not_opened"), [(0, 0, 3), (1, 2, 1), (2, 3, 0)])
def test_nesting_depth_limit(engine: Engine, tmp_path: Path, depth: int, found: int, not_opened: int) -> None:
    """Depth 0 opens nothing (the jar, the tgz and the plain .gz stay shut); 1 opens what is in the
    layer but not the jar in the jar; 2 opens everything here."""
    lay, props, inner_secret, tgz_secret = nested_layer()
    target = write_oci_layout(tmp_path / "layout", Image([lay]))
    result = scan(engine, target, limits=ImageLimits(max_depth=depth))
    assert len(secrets_found(result) & {props, inner_secret, tgz_secret}) == found
    assert result.stats.skipped.get("nested-depth", 0) == not_opened


def test_nested_archive_above_size_limit_is_not_opened(engine: Engine, tmp_path: Path) -> None:
    lay, *_ = nested_layer()
    limits = ImageLimits(max_nested_size=100)
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay])), limits=limits)
    assert result.findings == [] and result.stats.skipped["nested-too-large"] == 2


def test_identical_contents_are_scanned_once_per_layer(engine: Engine, tmp_path: Path) -> None:
    secret = github_token()
    content = f"TOKEN={secret}\n"
    first = layer(file("a/.env", content), file("b/.env", content), file("c/.env", content))
    second = layer(file("d/.env", content))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([first, second])))
    paths = sorted((f.layer["index"], f.path) for f in result.findings)  # type: ignore[index]
    assert paths == [(0, "a/.env"), (1, "d/.env")]  # the first path in tar order, once per layer
    assert result.stats.skipped["duplicate"] == 2


def test_large_and_binary_files_are_skipped(engine: Engine, tmp_path: Path) -> None:
    big, binary = github_token(), github_token()
    lay = layer(file("big.txt", f"T={big}\n" + "x" * 5000),
                file("bin.dat", b"\0\1\2" + f"T={binary}".encode()))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay])), max_file_size=1000)
    assert secrets_found(result) == set()
    assert result.stats.skipped["too-large"] == 1 and result.stats.skipped["binary"] == 1


# -- hostile images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["../../../../../../tmp/dg-{u}/layer.tar", "/tmp/dg-{u}/layer.tar",
                                 "ok/../../dg-{u}.tar"])
def test_traversal_reference_in_manifest_is_refused(engine: Engine, tmp_path: Path, ref: str) -> None:
    hostile = ref.format(u=uuid.uuid4().hex)
    image, *_ = simple_image()

    def poison(manifest: list[dict[str, object]]) -> list[dict[str, object]]:
        manifest[0]["Layers"] = [hostile, *manifest[0]["Layers"]]  # type: ignore[misc]
        return manifest

    target = write_docker_save(tmp_path / "image.tar", image, hook=poison,
                               extra={hostile: tar_bytes([file("x", "y")])})
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with pytest.raises(SourceError) as err:
            scan(engine, target)
    finally:
        os.chdir(cwd)
    message = str(err.value)
    assert repr(hostile) in message and "refusing the image" in message and "\n" not in message
    assert list(workdir.iterdir()) == [] and not Path(hostile.replace("../", "/").replace("//", "/")).exists()


def test_invalid_digest_reference_in_oci_index_is_refused(engine: Engine, tmp_path: Path) -> None:
    image, *_ = simple_image()

    def poison(index: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]]:
        index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "digest": "sha256:../../../../etc/passwd", "size": 1})
        return index

    expected = r"invalid digest reference 'sha256:\.\./\.\./\.\./\.\./etc/passwd'; refusing the image"
    with pytest.raises(SourceError, match=expected):
        scan(engine, write_oci_archive(tmp_path / "image.tar", image, hook=poison))


def test_blob_symlinked_outside_the_layout_is_refused(engine: Engine, tmp_path: Path) -> None:
    image, first, *_ = simple_image()
    root = write_oci_layout(tmp_path / "layout", image)
    blob = root / "blobs" / "sha256" / first.digest.partition(":")[2]
    outside = tmp_path / "outside.tar.gz"
    shutil.move(blob, outside)
    blob.symlink_to(outside)
    with pytest.raises(SourceError, match="resolves outside the image directory; refusing the image"):
        scan(engine, root)


def test_traversal_member_names_are_normalised_and_warned(engine: Engine, tmp_path: Path) -> None:
    climbing, absolute = github_token(), github_token()
    mark = uuid.uuid4().hex
    lay = layer(file(f"../../../../../../tmp/dg-{mark}.env", f"T={climbing}\n"),
                file(f"/etc/dg-{mark}.env", f"T={absolute}\n"))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay])))
    finally:
        os.chdir(cwd)
    assert one(result, climbing).path == f"tmp/dg-{mark}.env"
    assert one(result, absolute).path == f"etc/dg-{mark}.env"
    warned = [w for w in result.warnings if f"layer 0 ({lay.digest})" in w and "leaves the image root" in w]
    assert len(warned) == 2 and f"'../../../../../../tmp/dg-{mark}.env'" in warned[0]
    assert list(workdir.iterdir()) == []
    assert not Path(f"/tmp/dg-{mark}.env").exists() and not Path(f"/etc/dg-{mark}.env").exists()


def test_gzip_bomb_layer_is_aborted_in_bounded_memory(engine: Engine, tmp_path: Path) -> None:
    before, after = github_token(), github_token()
    bomb_size = 256 * MiB
    bomb = gzip_bomb_layer(tmp_path / "bomb.gz", bomb_size)
    assert bomb.size < bomb_size / 500  # what it claims to hold is 1000 times what it takes
    image = Image([layer(file("a.env", f"T={before}\n")), bomb, layer(file("b.env", f"T={after}\n"))])
    target = write_oci_layout(tmp_path / "layout", image)
    tracemalloc.start()
    try:
        result = scan(engine, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak  # the bomb would be 256 MiB: it was never held
    assert secrets_found(result) == {before, after}  # the scan went on after the bomb
    assert any(f"layer 1 ({bomb.digest})" in w and "decompression bomb" in w for w in result.warnings)


def test_zip_bomb_inside_a_layer_aborts_only_that_archive(engine: Engine, tmp_path: Path) -> None:
    secret = github_token()
    bomb = zip_bytes({"zeros.bin": bytes(32 * MiB)})
    lay = layer(file("app/bomb.zip", bomb), file("app/z.env", f"T={secret}\n"))
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lay])))
    assert secrets_found(result) == {secret}
    assert any("app/bomb.zip" in w and "zip bomb" in w for w in result.warnings)


def test_corrupt_gzip_layer_is_warned_and_the_others_are_scanned(engine: Engine, tmp_path: Path) -> None:
    before, after = github_token(), github_token()
    corrupt = raw_layer(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 200)
    image = Image([layer(file("a.env", f"T={before}\n")), corrupt, layer(file("b.env", f"T={after}\n"))])
    result = scan(engine, write_docker_save(tmp_path / "image.tar", image, layout="oci"))
    assert secrets_found(result) == {before, after}
    assert any(w.startswith(f"{tmp_path / 'image.tar'}: layer 1 ({corrupt.digest}): corrupt gzip")
               for w in result.warnings), result.warnings


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_layer_keeps_what_was_read(engine: Engine, tmp_path: Path, compress: bool) -> None:
    early, late = github_token(), github_token()
    full = layer(file("a.env", f"T={early}\n"), file("noise.bin", os.urandom(200_000)),
                 file("z.env", f"T={late}\n"), compress=compress)
    cut = truncated(full, full.size // 2)
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([cut])))
    assert secrets_found(result) == {early}
    assert any(f"layer 0 ({full.digest})" in w and "truncated" in w for w in result.warnings), result.warnings


def test_truncation_inside_a_nested_tar_is_blamed_on_the_layer(engine: Engine, tmp_path: Path) -> None:
    """The nested tar is read straight from the layer stream; the layer's truncation must be
    reported as the layer's, not swallowed as a broken nested archive while the layer goes on."""
    early = github_token()
    nested = tar_bytes([file("a.txt", "x\n"), file("noise.bin", os.urandom(300_000)), file("b.txt", "y\n")])
    full = layer(file("a.env", f"T={early}\n"), file("srv/bundle.tar", nested), compress=False)
    cut = truncated(full, full.size // 2)
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([cut])))
    assert secrets_found(result) == {early}
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        f"layer 0 ({full.digest}): corrupt or truncated tar (unexpected end of data); "
        "the rest of this layer was not scanned"]


def test_layer_of_several_gzip_members_is_read_to_the_end(engine: Engine, tmp_path: Path) -> None:
    first, last = github_token(), github_token()
    tar = tar_bytes([file("a.env", f"T={first}\n"), file("m.bin", os.urandom(50_000)),
                     file("z.env", f"T={last}\n")])
    data = multi_member_gzip(tar)
    blob = Blob(LAYER_GZIP, sha256(data), sha256(tar), len(data), data)
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([blob])))
    assert secrets_found(result) == {first, last} and result.warnings == []


def test_oversized_tar_metadata_header_is_refused(engine: Engine, tmp_path: Path) -> None:
    secret = github_token()
    image = Image([oversized_longname_layer(), layer(file("ok.env", f"T={secret}\n"))])
    result = scan(engine, write_oci_layout(tmp_path / "layout", image))
    assert secrets_found(result) == {secret}
    assert any("layer 0" in w and "oversized tar metadata header (2097152 bytes)" in w
               for w in result.warnings)


def test_several_images_in_one_save_scans_the_first_and_says_so(engine: Engine, tmp_path: Path) -> None:
    image, *_ = simple_image()

    def twice(manifest: list[dict[str, object]]) -> list[dict[str, object]]:
        return [manifest[0], {**manifest[0], "RepoTags": ["other:1"]}]

    result = scan(engine, write_docker_save(tmp_path / "image.tar", image, hook=twice))
    assert len(result.findings) == 2
    assert any("manifest.json lists 2 images; scanned the first (app:latest)" in w for w in result.warnings)


def test_zstd_layer_is_reported_not_scanned(engine: Engine, tmp_path: Path) -> None:
    secret = github_token()
    zstd = raw_layer(ZSTD_MAGIC + bytes(60), media_type=LAYER_ZSTD)
    image = Image([layer(file("a", f"T={secret}\n")), zstd])
    result = scan(engine, write_oci_layout(tmp_path / "layout", image))
    assert secrets_found(result) == {secret}
    assert f"{tmp_path / 'layout'}: layer 1 ({zstd.digest}): zstd compression not supported; not scanned" in (
        result.warnings)


def test_digest_mismatch_is_warned(engine: Engine, tmp_path: Path) -> None:
    good = layer(file("a", "nothing\n"))
    lying = Blob(good.media_type, sha256(b"something else"), good.diff_id, good.size, good.data)
    result = scan(engine, write_oci_layout(tmp_path / "layout", Image([lying])))
    assert any("does not match the digest" in w for w in result.warnings)


def test_member_and_byte_limits_stop_the_scan_with_a_warning(engine: Engine, tmp_path: Path) -> None:
    first, second = github_token(), github_token()
    image = Image([layer(file("a.env", f"T={first}\n")), layer(*(file(f"f{i}", "x\n") for i in range(10)),
                                                               file("z.env", f"T={second}\n"))])
    target = write_oci_layout(tmp_path / "layout", image)
    result = scan(engine, target, limits=ImageLimits(max_members=5))
    assert secrets_found(result) == {first}
    assert any("limit of 5 archive members reached in layer 1" in w for w in result.warnings)
    result = scan(engine, target, limits=ImageLimits(max_total_bytes=15_000))  # layer 0 is 10 KiB
    assert secrets_found(result) == {first}
    assert any("read limit of 15000 uncompressed bytes reached in layer 1" in w for w in result.warnings)


def test_nothing_scannable_raises(engine: Engine, tmp_path: Path) -> None:
    corrupt = raw_layer(b"\x1f\x8b" + b"\x00" * 50)
    image = Image([corrupt])
    root = write_oci_layout(tmp_path / "layout", image)
    (root / "blobs" / "sha256" / sha256(image.config()).partition(":")[2]).write_bytes(b"{not json")
    with pytest.raises(SourceError, match=r"nothing could be scanned: .*config .*not valid JSON.*layer 0"):
        scan(engine, root)


# -- targets that are not images ------------------------------------------------------------------------


def test_missing_target(engine: Engine, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar"
    with pytest.raises(SourceError) as err:
        scan(engine, missing)
    assert str(err.value) == f"{missing}: no such file or directory"


@pytest.mark.parametrize(("kind", "expected"), [
    ("text", "not a tar archive"), ("dir", "not an image directory"),
    ("tar", "no manifest.json or index.json"), ("gzip", "gzip-compressed; decompress it first"),
])
def test_not_an_image(engine: Engine, tmp_path: Path, kind: str, expected: str) -> None:
    target = tmp_path / "target"
    if kind == "text":
        target.write_text("hello\n" * 200)
    elif kind == "dir":
        target.mkdir()
        (target / "README").write_text("hi\n")
    elif kind == "tar":
        target.write_bytes(tar_bytes([file("README", "hi\n")]))
    else:
        target.write_bytes(gzip_bytes(tar_bytes([file("manifest.json", "[]")])))
    with pytest.raises(SourceError) as err:
        scan(engine, target)
    assert expected in str(err.value) and "docker save" in str(err.value)


def test_docker_target_without_a_daemon(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here (the missing-CLI case is tested below)")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")  # a daemon nobody runs
    with pytest.raises(SourceError) as err:
        scan(engine, "docker://alpine:3.19")
    message = str(err.value)
    assert message.startswith("docker://alpine:3.19: cannot export the image: ") and "\n" not in message
    assert "no-daemon.sock" in message or "daemon" in message.lower()
    assert list(temp.iterdir()) == []  # the private export dir is gone


def test_docker_target_without_the_cli(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    expected = r"^docker://app: cannot export the image: docker: command not found$"
    with pytest.raises(SourceError, match=expected):
        scan(engine, "docker://app")


def test_docker_target_with_an_option_like_name_is_refused(engine: Engine) -> None:
    with pytest.raises(SourceError, match="not an image name"):
        scan(engine, "docker://--output=/etc/passwd")
