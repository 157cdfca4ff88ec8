"""The members of a colorray shard, in order, from any byte stream (file, HTTP, object store).

Python's `tarfile` parses each header in pure Python: about 70 us a member on the AVX2 EPYC,
so at two members an image, tar reading alone cost more than decoding the 64-px JPEG
(docs/benchmarks.md). colorray's shards are written by webdataset's `TarWriter` in plain
USTAR format, so this reader accepts exactly that and refuses the rest with the shard's
name: extended (PAX, GNU) headers, links, devices, a bad header checksum, a member over
MAX_MEMBER_BYTES, a file that ends early. Every standard reader (tarfile, webdataset,
GNU tar) reads the same shards; this one only reads them faster.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from colorray.config import UserError

BLOCK = 512
READ_SIZE = 1 << 20
MAX_MEMBER_BYTES = 1 << 30  # a raw chunk of 4,096 images at 256 px is 805 MB


class ShardFormatError(UserError, ValueError):
    pass


class _Reader:
    """Exact-size reads over large reads of `stream` (a request or a system call each)."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.buf, self.pos, self.offset = stream, b"", 0, 0

    def read(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            block = self.stream.read(max(READ_SIZE, n))
            if not block:
                break
            self.buf = self.buf[self.pos:] + block
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        self.offset += len(out)
        return out


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def members(stream: BinaryIO, where: str, max_member: int = MAX_MEMBER_BYTES) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in the tar `stream`, in order; `where` names the shard
    in errors; a member over `max_member` bytes is refused before it is read."""
    r = _Reader(stream)
    while True:
        at = r.offset
        header = r.read(BLOCK)
        if len(header) < BLOCK:
            raise ShardFormatError(f"{where}: ends at byte {at:,} without the end-of-archive marker "
                                   "(truncated? re-run the shard stage)")
        if header == bytes(BLOCK):
            return
        try:
            if header[257:262] != b"ustar":
                raise ValueError("not a USTAR header")
            checksum = _octal(header[148:156])
            if checksum != sum(header) - sum(header[148:156]) + 8 * 32:
                raise ValueError("header checksum mismatch")
            size = _octal(header[124:136])
        except ValueError as e:
            raise ShardFormatError(f"{where}: byte {at:,}: {e}; not a shard written by colorray "
                                   "(re-run the shard stage)") from None
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix.decode("utf-8", "replace") + "/" + name
        if header[156:157] not in (b"0", b"\0"):
            raise ShardFormatError(f"{where}: member {name!r} is not a regular file (type "
                                   f"{header[156:157]!r}); refused")
        if size > max_member:
            raise ShardFormatError(f"{where}: member {name!r} claims {size:,} bytes (over "
                                   f"{max_member:,}); refused")
        data = r.read(size)
        padding = r.read(-size % BLOCK)
        if len(data) < size or len(padding) < -size % BLOCK:
            raise ShardFormatError(f"{where}: member {name!r} ends early, at byte {r.offset:,} "
                                   "(truncated? re-run the shard stage)")
        yield name, data
