"""Where shards live: a local folder or a URL, read the same way by every stage and node.

A *location* is a string: an absolute local path, or a URL whose files are named by
appending the file name (``manifest.json``, ``train-000000.tar.gz``):

* ``https://host/shards/``, ``s3://bucket/shards/``, ``gs://bucket/shards/`` (any protocol
  fsspec knows: s3 needs ``pip install s3fs``, gs ``gcsfs``), ``file:///abs/path``;
* ``http://`` only to this machine (a local mirror, the tests): like downloads
  (`colorray.data.download`), plain http across a network is refused;
* ``pipe:<command with {name}>``, webdataset's convention for any other tool, e.g.
  ``pipe:aws s3 cp s3://bucket/shards/{name} -``.

So every node of a Ray cluster streams the same shards with no copy: training reads
sequentially (HTTP without Range requests; object stores with read-ahead).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import BinaryIO

from colorray.config import UserError
from colorray.data.download import LOOPBACK_HOSTS

READ_BUFFER = 1 << 20
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


class StorageError(UserError, OSError):
    pass


class NotFound(StorageError, FileNotFoundError):
    pass


def is_url(location: str) -> bool:
    return location.startswith("pipe:") or "://" in location


def location(where: str | Path) -> str:
    """`where` as a location: a URL checked for its scheme, or an absolute local path (Ray
    workers run in other folders)."""
    where = str(where)
    if not is_url(where):
        return str(Path(where).resolve())
    if where.startswith("pipe:"):
        if "{name}" not in where:
            raise StorageError(f"{where}: a pipe: location needs {{name}} where the file name goes, "
                               "e.g. pipe:aws s3 cp s3://bucket/shards/{name} -")
        return where
    # fsspec chains transports with "::" (simplecache::http://host/...): the scheme that
    # matters is the one each link really uses, so every link is checked, not just the first.
    for link in where.split("::"):
        parsed = urllib.parse.urlparse(link)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "ftp") and parsed.hostname not in LOOPBACK_HOSTS:
            chained = f" (its link {link})" if link != where else ""
            raise StorageError(f"{where}: plain {scheme} is refused except to this machine{chained}; serve the "
                               "shards over https or from object storage (s3://, gs://)")
    parsed = urllib.parse.urlparse(where)
    if parsed.scheme.lower() == "file":
        return str(Path(urllib.parse.unquote(parsed.path)).resolve())
    return where.rstrip("/") + "/"


def is_plain_name(name: str) -> bool:
    """A file name without a folder, a leading dot or "..": what a manifest may name."""
    return bool(_FILE_NAME.fullmatch(name)) and ".." not in name


def file_url(loc: str, name: str) -> str:
    """The URL or path of the file `name` at `loc`. `name` comes from a manifest that may have
    travelled over a network: only a plain file name is accepted."""
    if not is_plain_name(name):
        raise StorageError(f"{loc}: {name!r} is not a plain file name (a manifest entry?); refused")
    if loc.startswith("pipe:"):
        return loc.replace("{name}", name)
    if is_url(loc):
        return loc + name
    return os.path.join(loc, name)


def open_file(loc: str, name: str) -> BinaryIO:
    """A binary stream of the file `name` at `loc`, read sequentially; close it when done."""
    url = file_url(loc, name)
    try:
        if not is_url(loc):
            return open(url, "rb", buffering=READ_BUFFER)
        if loc.startswith("pipe:"):
            import webdataset as wds

            return wds.gopen(url, "rb")
        import fsspec

        scheme = urllib.parse.urlparse(url).scheme.lower()
        # http(s): block_size 0 streams the body (no Range requests, which not every server has)
        options = {"block_size": 0} if scheme in ("http", "https") else {}
        return fsspec.open(url, "rb", **options).open()
    except FileNotFoundError:
        raise NotFound(f"{url}: not found") from None
    except ImportError as e:  # fsspec names the package a protocol needs (s3fs, gcsfs)
        raise StorageError(f"{url}: {e}") from None
    except (OSError, ValueError) as e:
        raise StorageError(f"{url}: cannot be opened ({type(e).__name__}: {e})") from None


def read_bytes(loc: str, name: str) -> bytes:
    with open_file(loc, name) as f:
        try:
            return f.read()
        except OSError as e:
            raise StorageError(f"{file_url(loc, name)}: read failed ({e})") from None


LOCAL_SHARDS = "data/shards"  # the shard stage's output, relative to the project folder


def stage_shards(arg: str | None, shards_url: str | None) -> str:
    """The shards a stage reads: `--shards` when given, else `data.shards_url`, else the shard
    stage's folder. dvc.lock records the local folder, so a `data.shards_url` must hold the same
    shards: where the local copy exists, the two manifests must be identical."""
    if arg:
        return location(arg)
    if shards_url is None:
        return location(LOCAL_SHARDS)
    try:
        shards_url = location(shards_url)
    except StorageError as e:
        raise StorageError(f"data.shards_url: {e}") from None
    local = Path(LOCAL_SHARDS) / "manifest.json"
    if local.is_file() and read_bytes(shards_url, "manifest.json") != local.read_bytes():
        raise StorageError(f"data.shards_url: {shards_url}manifest.json differs from {local}, the shards "
                           "dvc.lock records; upload the current shards there (README: Clusters) or set "
                           "data.shards_url: null")
    return shards_url
