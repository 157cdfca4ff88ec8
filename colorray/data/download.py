"""Resumable, verified downloads (http, https and file:// URLs).

A download lands in ``<name>.part`` and is renamed to its final name only after its
checksum matched, so a file under the final name is always complete and verified. An
interrupted download resumes from the bytes already in ``.part`` (HTTP Range requests;
for file:// the copy continues at the same offset).

Hand-written rather than pooch: pooch neither resumes nor reads file:// URLs, and both
are needed here (resume for 2-40 GB archives, file:// for local mirrors and tests).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


class ChecksumError(DownloadError):
    pass


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, checksum: str | None) -> str | None:
    """Return None if `path` matches `checksum` ("sha256:<hex>" or "md5:<hex>"), else its digest."""
    if checksum is None:
        return None
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    return None if actual == expected.lower() else f"{algorithm}:{actual}"


def _local_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file:// URLs must be absolute local paths (file:///...)")
    return Path(urllib.parse.unquote(parsed.path))


def _open(url: str, offset: int):
    """Return (stream, total_size or None, resumed) for reading `url` from `offset`."""
    if url.startswith("file://"):
        src = _local_path(url)
        if not src.is_file():
            raise DownloadError(f"{url}: no such file {src}")
        f = open(src, "rb")
        size = src.stat().st_size
        offset = min(offset, size)
        f.seek(offset)
        return f, size, offset
    req = urllib.request.Request(url, headers={"User-Agent": "colorray"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range past the end: the .part is already complete
            return None, offset, offset
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"{url}: cannot connect ({getattr(e, 'reason', e)}). On a machine without internet, "
            f"download it elsewhere and set data.url to file:///path/to/{Path(url).name}"
        ) from None
    length = resp.headers.get("Content-Length")
    if offset and resp.status != 206:  # server ignored Range: start over
        offset = 0
    total = int(length) + offset if length is not None else None
    return resp, total, offset


def download(url: str, dest: Path, checksum: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming a partial ``dest.part``; verify `checksum` if given.

    `checksum` is "sha256:<hex>" (or "md5:<hex>" for registry entries whose publishers only
    give md5). A file already at `dest` that matches is reused without any transfer.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if verify(dest, checksum) is None:
            return dest
        dest.unlink()  # stale or corrupt copy under the final name: fetch again
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    stream, total, offset = _open(url, offset)
    if stream is not None:
        with stream, open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                       desc=dest.name, disable=not progress)
            with bar:
                for block in iter(lambda: stream.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
    mismatch = verify(part, checksum)
    if mismatch is not None:
        part.unlink()
        raise ChecksumError(
            f"{url}: checksum mismatch: expected {checksum}, got {mismatch}; the file was "
            "deleted. Check data.url and data.sha256 in params.yaml."
        )
    os.replace(part, dest)
    return dest
