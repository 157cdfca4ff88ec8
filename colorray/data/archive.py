"""Safe extraction of untrusted zip and tar archives.

Every member is checked before anything is written: a member that would land outside the
target folder (``..``, an absolute path, a drive letter), a link of any kind, a device or
FIFO, a duplicate name, or a total uncompressed size over the bound refuses the whole
archive. Tar headers are read one at a time with running bounds (a GNU long-name or PAX
header may not exceed MAX_HEADER_BYTES, the archive MAX_MEMBERS members) and none is kept
(tarfile would keep every header it has read: 300,000 empty members took 182 MB), so a small
hostile archive cannot make the listing itself take gigabytes; the tar is read twice, once to
check, once to extract. A zip's member count is read from its end record before its central
directory is parsed (MAX_ZIP_MEMBERS). A second member with the name of an extracted file is
found when it is extracted (the file is there already), not by a list of every name.
Extraction goes to a temporary sibling folder that is renamed into place at the end, so the
target is either absent or complete.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 5_000_000  # Places365's full training archive has 1.8 M
MAX_ZIP_MEMBERS = 1_000_000  # zipfile holds its whole central directory (~0.5 KB a member); COCO has 118 k
MAX_HEADER_BYTES = 1 << 16  # a long name or PAX header: 64 KiB is far beyond any real path
MAX_NAME_CHARS = 4096  # PATH_MAX on Linux


class UnsafeArchiveError(ValueError):
    pass


def _check_name(archive: Path, name: str) -> PurePosixPath:
    if len(name) > MAX_NAME_CHARS:
        raise UnsafeArchiveError(f"{archive}: a member name of {len(name):,} characters (over {MAX_NAME_CHARS}); refused")
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target folder; refused")
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL character in its name; refused")
    return p


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized GNU long-name/long-link and PAX headers before
    tarfile reads them whole into memory."""

    def _proc_member(self, tarfile_):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) and self.size > MAX_HEADER_BYTES:
            raise UnsafeArchiveError(f"{tarfile_.name}: a {self.size:,}-byte extended header "
                                     f"(long name or PAX; over {MAX_HEADER_BYTES:,}); refused")
        return super()._proc_member(tarfile_)


def _counted(archive: Path, members):
    for i, (m, name, size) in enumerate(members):
        if i >= MAX_MEMBERS:
            raise UnsafeArchiveError(f"{archive}: more than {MAX_MEMBERS:,} members; refused")
        _check_name(archive, name)
        yield m, name, size


def _zip_entries(archive: Path) -> int:
    """The member count a zip's end-of-central-directory record (or its zip64 record) claims."""
    with open(archive, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (1 << 16) - 22))
        tail = f.read()
    i = tail.rfind(b"PK\x05\x06")
    if i < 0:
        return 0  # not a zip after all: zipfile says so
    entries = int.from_bytes(tail[i + 10:i + 12], "little")
    j = tail.rfind(b"PK\x06\x06", 0, i)
    if entries == 0xFFFF and j >= 0:
        entries = int.from_bytes(tail[j + 32:j + 40], "little")
    return entries


def _zip_members(archive: Path, zf: zipfile.ZipFile):
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refused")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded (a plain file)
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a special file; refused")
        yield info, info.filename, info.file_size


def _tar_members(archive: Path, tf: tarfile.TarFile):
    while (m := tf.next()) is not None:  # one header at a time (getmembers reads them all first)
        tf.members.clear()  # tarfile keeps every header it reads; nothing here needs them again
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a link; refused")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a special file (device or FIFO); refused")
        yield m, m.name, m.size


def _open(archive: Path):
    if zipfile.is_zipfile(archive):
        entries = _zip_entries(archive)
        if entries > MAX_ZIP_MEMBERS:
            raise UnsafeArchiveError(f"{archive}: a zip of {entries:,} members (over {MAX_ZIP_MEMBERS:,}); refused")
        return zipfile.ZipFile(archive), _zip_members
    try:
        return tarfile.open(archive, tarinfo=_BoundedTarInfo), _tar_members
    except tarfile.ReadError:
        raise UnsafeArchiveError(f"{archive}: neither a zip nor a tar archive") from None


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
    try:
        af, lister = _open(archive)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise UnsafeArchiveError(f"{archive}: cannot be read as an archive ({e})") from None
    with af:
        try:  # validate everything before writing anything (keeping nothing per member)
            total = 0
            for m, name, size in _counted(archive, lister(archive, af)):
                if select is None or select(name):
                    total += size
                    if total > max_bytes:
                        raise UnsafeArchiveError(
                            f"{archive}: would extract {total / 1e9:.2f} GB or more, over the bound of "
                            f"{max_bytes / 1e9:.2f} GB (data.max_extract_gb)")
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
            raise UnsafeArchiveError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
    tmp.mkdir(parents=True)
    try:
        af, lister = _open(archive)  # again, from the start: the members are read as they are extracted
        with af:
            for m, name, _ in lister(archive, af):
                if select is not None and not select(name):
                    continue
                target = tmp / _check_name(archive, name)
                if not name.endswith("/") and not (isinstance(m, tarfile.TarInfo) and m.isdir()) and target.exists():
                    raise UnsafeArchiveError(f"{archive}: member {name!r} appears twice (one would overwrite the "
                                             "other); refused")
                if isinstance(af, zipfile.ZipFile):
                    af.extract(m, tmp)
                else:
                    af.extract(m, tmp, set_attrs=False, filter="data")
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnsafeArchiveError(f"{archive}: a member cannot be extracted ({type(e).__name__}: {e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return dest
