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


# ---- issue 15: header bombs, duplicates, devices, FIFOs, unwritable members -------------------------

def _gnu_longname_bomb(path, name_bytes: int):
    """A .tar.gz whose one member has a GNU long name of `name_bytes` bytes: a few KB on disk."""
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("a/" + "x" * name_bytes)
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    return path


def test_a_tar_header_bomb_is_refused_before_it_is_read_whole(tmp_path):
    import tracemalloc

    archive = _gnu_longname_bomb(tmp_path / "bomb.tar.gz", 50 * 2**20)  # a 50 MB name
    assert archive.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(UnsafeArchiveError, match="extended header"):
        extract(archive, tmp_path / "out", max_bytes=10**9)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5 * 2**20, f"{peak / 2**20:.0f} MiB to refuse it"
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.extracting").exists()


def test_a_member_name_longer_than_a_path_is_named_not_a_traceback(tmp_path):
    archive = _gnu_longname_bomb(tmp_path / "long.tar.gz", 5000)
    with pytest.raises(UnsafeArchiveError, match="member name of 5,002 characters"):
        extract(archive, tmp_path / "out", max_bytes=10**9)


@pytest.mark.parametrize("make", [_zip, _tar])
def test_duplicate_members_are_refused(tmp_path, make):
    archive = make(tmp_path / ("a.zip" if make is _zip else "a.tgz"), [OK, ("root/ok.txt", b"other", None)])
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        extract(archive, tmp_path / "out", max_bytes=10**6)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_members_are_refused(tmp_path, kind):
    path = tmp_path / "dev.tar"
    with tarfile.open(path, "w") as tf:
        tf.addfile(tarfile.TarInfo("root/ok.txt"), io.BytesIO(b""))
        ti = tarfile.TarInfo("root/dev")
        ti.type = kind
        tf.addfile(ti)
    with pytest.raises(UnsafeArchiveError, match="special file"):
        extract(path, tmp_path / "out", max_bytes=10**6)
    assert not (tmp_path / "out").exists()


def test_a_truncated_archive_is_named(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [OK, ("root/big.bin", os.urandom(200_000), None)])
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(UnsafeArchiveError, match="corrupt or truncated|cannot be extracted"):
        extract(archive, tmp_path / "out", max_bytes=10**6)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.extracting").exists()
