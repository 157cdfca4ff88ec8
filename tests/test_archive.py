import io
import os
import stat
import tarfile
import zipfile

import pytest

from colorray.data.archive import UnsafeArchiveError, extract


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(ti)
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, "ok.txt"
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


OK = ("root/ok.txt", b"fine", None)


@pytest.mark.parametrize("bad, why", [
    (("../evil", b"x", None), "escapes the target folder"),
    (("root/../../evil", b"x", None), "escapes the target folder"),
    (("/tmp/evil_abs", b"x", None), "absolute path"),
    (("root/link", b"/etc/passwd", stat.S_IFLNK | 0o777), "symbolic link"),
])
def test_unsafe_zip_is_refused_and_nothing_is_written(tmp_path, bad, why):
    archive = _zip(tmp_path / "a.zip", [OK, bad])
    target = tmp_path / "work" / "out"
    with pytest.raises(UnsafeArchiveError, match=why):
        extract(archive, target, max_bytes=10**6)
    assert not target.exists() and not (tmp_path / "work").exists()
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/evil_abs")


@pytest.mark.parametrize("bad, why", [
    (("../evil", b"x", None), "escapes the target folder"),
    (("/tmp/evil_abs", b"x", None), "absolute path"),
    (("root/link", b"", "symlink"), "is a link"),
    (("root/hard", b"", "hardlink"), "is a link"),
])
def test_unsafe_tar_is_refused_and_nothing_is_written(tmp_path, bad, why):
    archive = _tar(tmp_path / "a.tar.gz", [OK, bad])
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=why):
        extract(archive, target, max_bytes=10**6)
    assert not target.exists() and not (tmp_path / "evil").exists()


def test_archive_over_the_size_bound_is_refused(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("big.bin", b"\0" * 5000, None)])
    with pytest.raises(UnsafeArchiveError, match="over the bound"):
        extract(archive, tmp_path / "out", max_bytes=4000)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", [_zip, _tar])
def test_safe_archive_extracts_completely(tmp_path, make):
    archive = make(tmp_path / ("a.zip" if make is _zip else "a.tgz"),
                   [OK, ("root/sub/b.txt", b"bee", None)])
    out = extract(archive, tmp_path / "out", max_bytes=10**6)
    assert (out / "root" / "ok.txt").read_bytes() == b"fine"
    assert (out / "root" / "sub" / "b.txt").read_bytes() == b"bee"
    assert not (tmp_path / "out.extracting").exists()


def test_not_an_archive_is_named(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"hello")
    with pytest.raises(UnsafeArchiveError, match="neither a zip nor a tar"):
        extract(p, tmp_path / "out", max_bytes=10**6)
