"""A generated corpus of hostile files and archives through fetch, shard, colorize and the
pyfunc model (issue 15): every one is named with its reason, nothing crashes, nothing is
written outside its folder, no good file is lost, and the peak memory of the whole run (in a
subprocess, its decoding workers included) stays bounded."""
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT
from test_decode_and_folder import _png_strip

# Bytes the whole corpus may add to the RSS the imports take (about 800 MiB with torch): colorize
# runs the 1 x 2,000,000 strip at its full 2 megapixels (about 300 MB of float intermediates); the
# old resize alone asked for 24.6 GB for that one file.
GROWTH_BOUND = 768 * 2**20


def _colorful(w=48, h=32):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    return Image.fromarray(np.stack([x, 255 - x, np.full_like(x, 90)], -1))


def _encode(img, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(width: int, height: int, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(_encode(_colorful(), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def _tiff_claiming(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _gif_claiming(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;")


def images() -> dict[str, tuple[bytes | str, str | None, str | None]]:
    """name -> (content, reason the shard stage gives or None if kept, reason colorize gives or
    None if written). Content "fifo", "sparse", "link-out", "link-loop" are made specially."""
    jpeg = _encode(_colorful(200, 150), "JPEG")
    frames = [_colorful(), _colorful().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    text_bomb = _chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"a" * (20 * 2**20), 9))
    zip_buf = io.BytesIO()
    with zipfile.ZipFile(zip_buf, "w") as zf:
        zf.writestr("inside.txt", "a zip appended to a photo")
    return {
        # good files, some in odd places or under odd names: all kept and written
        "good/plain.jpg": (_encode(_colorful(), "JPEG"), None, None),
        "good/deep16.tif": (_encode(Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16)),
                                    "TIFF"), None, None),
        "good/png-named.jpg": (_encode(_colorful(), "PNG"), None, None),
        "good/jpeg-named.png": (_encode(_colorful(), "JPEG"), None, None),
        "good/polyglot.jpg": (_encode(_colorful(), "JPEG") + zip_buf.getvalue(), None, None),
        "good/ümlaut ☃ photo.png": (_encode(_colorful(), "PNG"), None, None),
        "/".join(f"d{i}" for i in range(40)) + "/deep.png": (_encode(_colorful(), "PNG"), None, None),
        # broken and foreign files
        "bad/empty.jpg": (b"", "empty file", "empty file"),
        "bad/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated", "truncated"),
        "bad/random.jpg": (os.urandom(3000), "not an image", "not an image"),
        "bad/corrupt.png": (b"\x89PNG\r\n\x1a\n" + os.urandom(300), "corrupt", "corrupt"),
        "bad/eps.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "PostScript/EPS", "PostScript/EPS"),
        "bad/pdf.png": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF", "PDF"),
        "bad/psd.jpg": (b"8BPS\x00\x01" + b"\0" * 40, "Photoshop PSD", "Photoshop PSD"),
        "bad/icon.png": (b"\x00\x00\x01\x00\x01\x00" + b"\0" * 40, "ICO", "ICO"),
        "bad/svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>',
                        "not an image", "not an image"),
        "bad/text-bomb.png": (_png_header(8, 8, text_bomb), "corrupt", "corrupt"),
        # memory bombs: a few bytes that claim billions of pixels or an absurd shape
        "bomb/strip.png": (_png_strip(1, 2_000_000), "aspect ratio", None),
        "bomb/huge.png": (_png_header(20_000, 20_000), "too large", "too large"),
        "bomb/over-limit.png": (_png_header(10_000, 9_000), "too large|over the limit", "too large|over the limit"),
        "bomb/huge.jpg": (_jpeg_claiming(65_000, 65_000), "too large", "too large"),
        "bomb/huge.bmp": (_bmp_claiming(50_000, 50_000), "too large", "too large"),
        "bomb/huge.tif": (_tiff_claiming(100_000, 100_000), "too large", "too large"),
        "bomb/huge.gif": (_gif_claiming(60_000, 60_000), "too large", "too large"),
        "bomb/zero-width.png": (_png_header(0, 10), "corrupt", "corrupt"),
        "multi/animated.gif": (_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                               "animated or multi-frame", "animated or multi-frame"),
        "multi/pages.tif": (_encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
                            "animated or multi-frame", "animated or multi-frame"),
        # things that are not regular files
        "special/pipe.jpg": ("fifo", "FIFO", "not a regular file"),
        "special/huge-sparse.jpg": ("sparse", "over the 1,024 MiB limit", "over the 1,024 MiB limit"),
        "special/link-out.png": ("link-out", "symbolic link", None),  # colorize follows a link to a photo
        "special/loop": ("link-loop", "symbolic link", None),  # colorize never descends into it
        "special/clip.mp4": (b"\0\0\0\x18ftypmp42" + b"\0" * 100, "not an image file extension", None),
    }


def _tar_bytes(members, fmt=tarfile.PAX_FORMAT, mode="w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _ti(name, kind=tarfile.REGTYPE, size=0, **kw):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size = kind, size
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _zip_bytes(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def archives() -> dict[str, tuple[bytes, str]]:
    """name -> (archive bytes, the reason fetch refuses it with)."""
    ok = ("tiny/ok.txt", b"fine", None)
    ok_t = (_ti("tiny/ok.txt", size=4), b"fine")
    good_zip = _zip_bytes([ok, ("tiny/big.bin", os.urandom(100_000), None)])
    good_tgz = _tar_bytes([ok_t, (_ti("tiny/big.bin", size=100_000), os.urandom(100_000))])
    return {
        "escape.zip": (_zip_bytes([ok, ("../../evil.txt", b"x", None)]), "escapes the target folder"),
        "absolute.zip": (_zip_bytes([ok, ("/tmp/colorray-evil.txt", b"x", None)]), "absolute path"),
        "drive.zip": (_zip_bytes([ok, ("C:/evil.txt", b"x", None)]), "absolute path"),
        "symlink.zip": (_zip_bytes([ok, ("tiny/link", b"/etc/passwd", 0o120777)]), "symbolic link"),
        "duplicate.zip": (_zip_bytes([ok, ("tiny/ok.txt", b"other", None)]), "appears twice"),
        "bomb.zip": (_zip_bytes([ok, ("tiny/zeros.bin", b"\0" * 3_000_000, None)]), "over the bound"),
        "truncated.zip": (good_zip[: len(good_zip) // 2], "neither a zip nor a tar"),
        "not-an-archive.zip": (b"just some text, no archive", "neither a zip nor a tar"),
        "escape.tgz": (_tar_bytes([ok_t, (_ti("../evil.txt", size=1), b"x")]), "escapes the target folder"),
        "symlink.tgz": (_tar_bytes([ok_t, (_ti("tiny/l", tarfile.SYMTYPE, linkname="/etc/passwd"), None)]), "is a link"),
        "hardlink.tgz": (_tar_bytes([ok_t, (_ti("tiny/h", tarfile.LNKTYPE, linkname="tiny/ok.txt"), None)]), "is a link"),
        "device.tgz": (_tar_bytes([ok_t, (_ti("tiny/dev", tarfile.CHRTYPE), None)]), "special file"),
        "fifo.tgz": (_tar_bytes([ok_t, (_ti("tiny/fifo", tarfile.FIFOTYPE), None)]), "special file"),
        "duplicate.tgz": (_tar_bytes([ok_t, (_ti("tiny/ok.txt", size=1), b"y")]), "appears twice"),
        "longname-bomb.tgz": (_tar_bytes([(_ti("tiny/" + "x" * (50 * 2**20), size=1), b"x")], tarfile.GNU_FORMAT),
                              "extended header"),
        "pax-bomb.tgz": (_tar_bytes([(_ti("tiny/p", size=1, pax_headers={"comment": "c" * (20 * 2**20)}), b"x")]),
                         "extended header"),
        "long-name.tgz": (_tar_bytes([(_ti("tiny/" + "y" * 5000, size=1), b"x")]), "member name of"),
        "truncated.tgz": (good_tgz[: len(good_tgz) // 2], "corrupt or truncated"),
    }


def build(root: Path) -> None:
    """Write the corpus under root/photos and root/archives (and a file outside both)."""
    (root / "outside-secret.png").write_bytes(_encode(_colorful(), "PNG"))
    for name, (content, _, _) in images().items():
        path = root / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "fifo":
            os.mkfifo(path)
        elif content == "sparse":
            with open(path, "wb") as f:
                f.truncate(2 * 2**30)
        elif content == "link-out":
            path.symlink_to(root / "outside-secret.png")
        elif content == "link-loop":
            path.symlink_to(root / "photos")
        else:
            path.write_bytes(content)
    (root / "archives").mkdir()
    for name, (content, _) in archives().items():
        (root / "archives" / name).write_bytes(content)


def run(root: Path) -> dict:
    """Inside the subprocess: every path of colorray a hostile file can reach."""
    import pandas as pd

    from colorray.colorize import colorize_files, find_inputs
    from colorray.config import DataParams, parse_params
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source
    from colorray.models import build_generator
    from colorray.pyfunc import ColorizerModel

    out = {"fetch": {}, "rss_after_imports": 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    for archive in sorted((root / "archives").iterdir()):  # the files on disk: no corpus is built here
        name = archive.name
        cfg = DataParams(source="tiny-imagenet", url=archive.as_uri(), max_extract_gb=0.002)
        try:
            fetch_source(cfg, root / "raw-archive", root / "downloads")
            out["fetch"][name] = None
        except Exception as e:  # the test checks the kind and the reason
            out["fetch"][name] = f"{type(e).__name__}: {e}"
    cfg = DataParams(source="folder", path=str(root / "photos"), image_size=32, val_fraction=0, test_fraction=0)
    fetch_source(cfg, root / "raw", root / "downloads")
    manifest = write_shards(cfg, root / "raw", root / "shards", workers=2, progress=False)
    out["shard"] = {"dropped": {d["key"]: d["reason"] for d in manifest["dropped"]},
                    "ignored": dict(line.split(": ", 1) for line in manifest["ignored"]), "kept": manifest["kept"]}
    params = parse_params({"model": {"g_channels": 8, "g_channels_max": 16}})
    G = build_generator(params).eval()
    files = find_inputs([str(root / "photos")])
    r = colorize_files(G, 64, files, root / "colorized", progress=False)
    rel = {str(src): str(p) for src, p in files}
    out["colorize"] = {"written": sorted(os.path.relpath(p, root / "colorized") for p in r["written"]),
                       "failed": {rel[k]: v for k, v in r["failed"].items()}}
    model = ColorizerModel()
    model.G, model.image_size = G, 64
    out["pyfunc"] = {}
    import base64

    for path in sorted((root / "photos").rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 2**30:
            name = path.relative_to(root / "photos").as_posix()
            try:
                model.predict(None, pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode()]}))
                out["pyfunc"][name] = None
            except Exception as e:
                out["pyfunc"][name] = f"{type(e).__name__}: {e}"
    # Peak RSS of this process, and of the decoding workers it forked (ru_maxrss is in KiB).
    out["peak_rss"] = 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rss_workers"] = 1024 * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return out


def test_a_hostile_corpus_is_named_file_by_file_with_bounded_memory(tmp_path):
    build(tmp_path)
    assert len(images()) + len(archives()) >= 30 + 7  # hostile ones, and the good files among them
    code = f"import json, sys; sys.path.insert(0, 'tests'); import test_hostile_inputs as t; " \
           f"from pathlib import Path; print(json.dumps(t.run(Path({str(tmp_path)!r}))))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])

    # fetch: every hostile archive refused with its reason, nothing extracted anywhere
    for name, (_, reason) in archives().items():
        assert found["fetch"][name] is not None and reason in found["fetch"][name], (name, found["fetch"][name])
        assert found["fetch"][name].startswith(("UnsafeArchiveError", "FileExistsError")) is True
    assert not (tmp_path / "raw-archive").exists() and not list(tmp_path.glob("raw-archive*"))
    assert not Path("/tmp/colorray-evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()

    # shard: every bad file dropped or ignored with its reason; every good file kept
    named = {**found["shard"]["dropped"], **found["shard"]["ignored"]}
    for name, (_, shard_reason, _) in images().items():
        if shard_reason is None:
            assert name not in named, (name, named.get(name))
        else:
            assert name in named and re.search(shard_reason, named[name]), (name, named.get(name))
    good = [n for n, (_, reason, _) in images().items() if reason is None]
    assert found["shard"]["kept"] == len(good)

    # colorize: every bad file named, every good one (and the followed link) written
    for name, (_, _, reason) in images().items():
        if reason is None:
            assert name not in found["colorize"]["failed"]
        else:
            assert re.search(reason, found["colorize"]["failed"][name]), (name, found["colorize"]["failed"].get(name))
    written = {str(Path(p).with_suffix("")) for p in found["colorize"]["written"]}
    assert {str(Path(n).with_suffix("")) for n in good} <= written
    assert not any(p.startswith("special/loop") for p in found["colorize"]["written"])

    # the pyfunc model: every bad file refused with its reason (one line), every good one colorized
    assert "not an image" in found["pyfunc"]["special/clip.mp4"]  # a request has no file name to go by
    for name, (content, _, reason) in images().items():
        if isinstance(content, bytes) and not name.startswith("special/"):
            got = found["pyfunc"][name]
            if reason is None or name == "bomb/strip.png":
                assert got is None, (name, got)
            else:
                assert got is not None and "row 0: " in got and re.search(reason, got) and "\n" not in got, (name, got)

    # nothing written outside the folders colorray was given
    made = {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()}
    assert made <= {"photos", "archives", "outside-secret.png", "raw", "shards", "colorized", "downloads"}, made
    base, peak, workers = found["rss_after_imports"], found["peak_rss"], found["peak_rss_workers"]
    print(f"RSS: {base / 2**20:.0f} MiB after the imports, peak {peak / 2**20:.0f} MiB, workers {workers / 2**20:.0f} MiB")
    assert peak - base < GROWTH_BOUND and workers - base < GROWTH_BOUND, (base, peak, workers)
