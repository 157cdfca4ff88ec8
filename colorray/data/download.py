"""Resumable, verified downloads (https, file:// and loopback http URLs).

A download lands in ``<name>.part`` and is renamed to its final name only when it is
complete (as long as the server said: Content-Length / Content-Range) and its checksum
matched, so a file under the final name is always whole and, with a checksum, verified. A
transfer that ends early raises `IncompleteDownload` and keeps the ``.part``. The next run
resumes it only when the bytes of two versions of a file cannot be joined unnoticed: with a
Range request whose If-Range names the version it started (the server's ETag or
Last-Modified), or, when the server gave neither, with a checksum that the whole file must then
match. Otherwise (and always for file:// copies) it starts again from byte 0. A download
stops with an error as soon as it passes `max_bytes` (data.max_download_bytes), whatever the
server announced.

Only https and file:// URLs are fetched (plain http only from this machine: a local mirror,
the tests); a redirect may not leave https. Hand-written rather than pooch: pooch neither
resumes nor reads file:// URLs, and both are needed here (2-40 GB archives, local mirrors).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from colorray.atomic import publish, write_text_atomic
from colorray.config import UserError

CHUNK = 1 << 20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class DownloadError(UserError, RuntimeError):
    pass


class ChecksumError(DownloadError):
    pass


class IncompleteDownload(DownloadError):
    """The transfer ended before the size the server announced; the ``.part`` is kept."""


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


def check_url(url: str, redirected_from: str | None = None) -> None:
    """Refuse every scheme but https and file (and http to this machine); refuse a redirect
    that leaves https."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    loopback_http = scheme == "http" and parsed.hostname in LOOPBACK_HOSTS
    if redirected_from is not None and urllib.parse.urlparse(redirected_from).scheme.lower() == "https" \
            and scheme != "https":
        raise DownloadError(f"{redirected_from}: redirected to {url}, away from https; refused")
    if scheme not in ("https", "file") and not loopback_http:
        where = f"{redirected_from}: redirected to {url}" if redirected_from else url
        raise DownloadError(f"{where}: the {scheme or 'missing'} scheme is refused; colorray downloads over "
                            "https (or file:///path for a local copy)")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, redirected_from=req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def _local_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file:// URLs must be absolute local paths (file:///...)")
    return Path(urllib.parse.unquote(parsed.path))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if m is None:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _open(url: str, offset: int, validator: str | None):
    """Return (stream, total size or None, offset to write at, validator of this version)."""
    if url.startswith("file://"):  # a local copy: always whole (a changed file is never spliced)
        src = _local_path(url)
        if not src.is_file():
            raise DownloadError(f"{url}: no such file {src}")
        return open(src, "rb"), src.stat().st_size, 0, None
    req = urllib.request.Request(url, headers={"User-Agent": "colorray"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        if validator:
            req.add_header("If-Range", validator)
    try:
        resp = _OPENER.open(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range not satisfiable: complete only if the size says so
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == offset:
                return None, offset, offset, validator
            return _open(url, 0, None)  # the .part is not a prefix of this file: start over
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        if isinstance(getattr(e, "reason", None), DownloadError):
            raise e.reason from None
        raise DownloadError(
            f"{url}: cannot connect ({getattr(e, 'reason', e)}). On a machine without internet, "
            f"download it elsewhere and set data.url to file:///path/to/{Path(url).name}"
        ) from None
    version = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
    length = resp.headers.get("Content-Length")
    if offset and resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != offset:
            resp.close()
            raise DownloadError(f"{url}: asked for bytes from {offset}, the server sent "
                                f"{resp.headers.get('Content-Range')!r}; refused")
        return resp, total, offset, validator or version
    # A full answer (200): no Range asked, Range ignored, or If-Range says the file changed.
    return resp, (int(length) if length is not None else None), 0, version


DEFAULT_MAX_BYTES = 64_000_000_000  # data.max_download_bytes's default: the largest source is ~25 GB


class DownloadTooLarge(DownloadError):
    """The response is (or announced itself) larger than data.max_download_bytes."""


def _resume_state(part: Path, meta: Path, url: str, checksum: str | None) -> tuple[int, str | None]:
    """(offset, validator) to resume `part` from, or (0, None) to start over: only a .part of
    this URL whose version the server named (If-Range), or one the checksum will check."""
    if not part.exists():
        return 0, None
    try:
        record = json.loads(meta.read_text()) if meta.exists() else {}
    except (OSError, ValueError):
        record = {}
    same_url = record.get("url") == url
    validator = record.get("validator") if same_url else None
    if validator or (same_url and checksum is not None):
        return part.stat().st_size, validator
    return 0, None


def download(url: str, dest: Path, checksum: str | None = None, progress: bool = True,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Download `url` to `dest`, resuming a partial ``dest.part`` when that is safe (see the
    module's docstring); verify `checksum` if given; stop past `max_bytes`.

    `checksum` is "sha256:<hex>" (or "md5:<hex>" for registry entries whose publishers only
    give md5). A file already at `dest` that matches is reused without any transfer.
    """
    check_url(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if verify(dest, checksum) is None:
            return dest
        dest.unlink()  # stale or corrupt copy under the final name: fetch again
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")  # the version the .part holds bytes of
    offset, validator = _resume_state(part, meta, url, checksum)
    try:
        return _transfer(url, dest, part, meta, checksum, progress, max_bytes, offset, validator)
    except DownloadTooLarge:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise


def _transfer(url, dest, part, meta, checksum, progress, max_bytes, offset, validator) -> Path:
    stream, total, offset, version = _open(url, offset, validator)
    if stream is not None:
        if total is not None and total > max_bytes:
            stream.close()
            raise DownloadTooLarge(f"{url}: the server announces {total:,} bytes, over data.max_download_bytes "
                                   f"({max_bytes:,}); raise it in params.yaml if this file is right")
        write_text_atomic(meta, json.dumps({"url": url, "validator": version}))
        with stream, open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                       desc=dest.name, disable=not progress)
            written = offset
            try:
                with bar:
                    for block in iter(lambda: stream.read(CHUNK), b""):
                        written += len(block)
                        if written > max_bytes:  # an endless or lying response: stop before the disk fills
                            raise DownloadTooLarge(f"{url}: more than data.max_download_bytes ({max_bytes:,}) "
                                                   "bytes; stopped and deleted the partial file")
                        out.write(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, bad chunking
                total = total or -1  # reported below as incomplete
                reason = f"the transfer failed ({type(e).__name__}: {e})"
            else:
                reason = "the server closed the connection early"
            out.flush()
            os.fsync(out.fileno())  # the bytes a next run resumes from, kept even when incomplete
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(
            f"{url}: {reason if stream is not None else 'incomplete'} after {size:,} of "
            f"{total if total >= 0 else '?'} bytes; the bytes are kept in {part} and the next run "
            + ("resumes there" if version or validator or checksum else
               "starts again (the server names no version of the file and no checksum is set, so "
               "resuming could join two versions)"))
    mismatch = verify(part, checksum)
    if mismatch is not None:
        part.unlink()
        meta.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: checksum mismatch: expected {checksum}, got {mismatch}; the file was "
            "deleted. Check data.url and data.sha256 in params.yaml."
        )
    publish(part, dest)
    meta.unlink(missing_ok=True)
    return dest
