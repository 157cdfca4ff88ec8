"""Safe extraction of untrusted zip and tar archives.

Every member is checked before anything is written: a member that would land outside the
target folder (``..``, an absolute path, a drive letter), a link of any kind, a device or
FIFO, or a total uncompressed size over the bound refuses the whole archive. Extraction
goes to a temporary sibling folder that is renamed into place at the end, so the target
is either absent or complete.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    pass


def _check_name(archive: Path, name: str) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target folder; refused")
    return p


def _zip_members(archive: Path, zf: zipfile.ZipFile):
    for info in zf.infolist():
        _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refused")
        yield info, info.file_size


def _tar_members(archive: Path, tf: tarfile.TarFile):
    for m in tf.getmembers():
        _check_name(archive, m.name)
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a link; refused")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a special file; refused")
        yield m, m.size


def extract(archive: Path, dest: Path, max_bytes: int, select=None) -> Path:
    """Extract `archive` (zip or tar, any compression) into `dest`, which must not exist.

    `select(name) -> bool` keeps only some members (e.g. one Places365 category); every
    member is still checked for safety.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists; remove it first")
    tmp = dest.with_name(dest.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    if zipfile.is_zipfile(archive):
        opener, lister = zipfile.ZipFile, _zip_members
    elif tarfile.is_tarfile(archive):
        opener, lister = tarfile.open, _tar_members
    else:
        raise UnsafeArchiveError(f"{archive}: neither a zip nor a tar archive")
    with opener(archive) as af:
        members = list(lister(archive, af))  # validate everything before writing anything
        if select is not None:
            members = [(m, size) for m, size in members if select(getattr(m, "filename", None) or m.name)]
        total = sum(size for _, size in members)
        if total > max_bytes:
            raise UnsafeArchiveError(
                f"{archive}: would extract {total / 1e9:.2f} GB, over the bound of "
                f"{max_bytes / 1e9:.2f} GB (data.max_extract_gb)"
            )
        tmp.mkdir(parents=True)
        try:
            if isinstance(af, zipfile.ZipFile):
                af.extractall(tmp, members=[m for m, _ in members])
            else:
                af.extractall(tmp, members=[m for m, _ in members], filter="data")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    os.replace(tmp, dest)
    return dest
