import hashlib
import http.server
import json
import threading

import pytest

from colorray.data.download import ChecksumError, DownloadError, download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


def test_file_url_download_is_verified(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = download(src.as_uri(), tmp_path / "dl" / "x.bin", SHA, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "x.bin.part").exists()


def test_md5_checksums_from_the_registry_are_checked_too(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    assert download(src.as_uri(), tmp_path / "x.bin", md5, progress=False).read_bytes() == PAYLOAD


def test_wrong_checksum_is_refused_and_nothing_is_left_under_the_final_name(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "x.bin"
    with pytest.raises(ChecksumError, match="checksum mismatch: expected sha256:0000"):
        download(src.as_uri(), dest, "sha256:" + "0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("x.bin.part").exists()


def test_a_file_url_copy_starts_again_instead_of_joining_a_stale_part(tmp_path):
    """A local copy is cheap to redo, and its file may have changed since the .part was written."""
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "x.bin"
    dest.with_name("x.bin.part").write_bytes(b"\xff" * 300_000)  # bytes of an older version
    dest.with_name("x.bin.part.json").write_text(json.dumps({"url": src.as_uri(), "validator": None}))
    assert download(src.as_uri(), dest, progress=False).read_bytes() == PAYLOAD  # no checksum: still whole


def test_missing_file_url_names_the_path(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "x.zip", progress=False)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """A minimal HTTP server that honours Range requests, like a real file host."""

    requests: list = []

    def do_GET(self):
        rng = self.headers.get("Range")
        self.requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    server.shutdown()
    server.server_close()


def test_http_download_resumes_with_a_range_request(tmp_path, http_url):
    """No version from the server, but a checksum that the joined file must match: resumed."""
    dest = tmp_path / "x.bin"
    dest.with_name("x.bin.part").write_bytes(PAYLOAD[:123_456])
    dest.with_name("x.bin.part.json").write_text(json.dumps({"url": http_url, "validator": None}))
    assert download(http_url, dest, SHA, progress=False).read_bytes() == PAYLOAD
    assert _RangeHandler.requests == ["bytes=123456-"]
    # A verified file under the final name is reused: no second request.
    download(http_url, dest, SHA, progress=False)
    assert len(_RangeHandler.requests) == 1


def test_unreachable_host_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(DownloadError, match="file:///"):
        download("http://127.0.0.1:9/data.zip", tmp_path / "x.zip", progress=False)


# ---- issue 15: short bodies, resume validators, schemes and redirects ------------------------------

class _ShortHandler(http.server.BaseHTTPRequestHandler):
    """Announces the whole payload, sends `cut` bytes of it, closes (a dropped connection); with
    cut None it behaves, honouring Range and If-Range against its ETag."""

    cut: int | None = None
    etag = '"v1"'
    seen: list = []

    def do_GET(self):
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        self.seen.append((rng, if_range))
        start = int(rng.split("=")[1].rstrip("-")) if rng and if_range in (None, self.etag) else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", self.etag)
        self.end_headers()
        self.wfile.write(body if self.cut is None else body[:self.cut])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def short_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ShortHandler.seen, _ShortHandler.cut, _ShortHandler.etag = [], None, '"v1"'
    yield f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("checksum", [None, SHA])
def test_a_short_http_body_is_an_error_that_keeps_the_part_and_resumes(tmp_path, short_url, checksum):
    from colorray.data.download import IncompleteDownload

    dest = tmp_path / "x.bin"
    _ShortHandler.cut = 400_000
    with pytest.raises(IncompleteDownload, match="after 400,000 of 1048576 bytes"):
        download(short_url, dest, checksum, progress=False)
    assert not dest.exists() and dest.with_name("x.bin.part").stat().st_size == 400_000
    _ShortHandler.cut = None  # the connection holds this time: the download resumes from the .part
    assert download(short_url, dest, checksum, progress=False).read_bytes() == PAYLOAD
    assert _ShortHandler.seen[-1] == ("bytes=400000-", '"v1"')  # Range + If-Range with the version it began


def test_a_file_changed_on_the_server_is_fetched_whole_not_joined(tmp_path, short_url):
    dest = tmp_path / "x.bin"
    _ShortHandler.cut = 300_000
    with pytest.raises(DownloadError):
        download(short_url, dest, progress=False)
    _ShortHandler.cut, _ShortHandler.etag = None, '"v2"'  # If-Range no longer matches: a full 200
    assert download(short_url, dest, SHA, progress=False).read_bytes() == PAYLOAD


def test_a_416_is_complete_only_when_the_size_says_so(tmp_path, monkeypatch):
    """416 Range Not Satisfiable for a .part longer than the file: start over, not 'complete'."""
    import io
    import urllib.error

    import colorray.data.download as dl

    calls = []

    class Opener:
        def open(self, req, timeout):
            calls.append(req.get_header("Range"))
            if req.get_header("Range"):
                raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable",
                                             {"Content-Range": f"bytes */{len(PAYLOAD)}"}, io.BytesIO())
            resp = io.BytesIO(PAYLOAD)
            resp.status, resp.headers = 200, {"Content-Length": str(len(PAYLOAD))}
            return resp

    monkeypatch.setattr(dl, "_OPENER", Opener())
    dest = tmp_path / "x.bin"
    dest.with_name("x.bin.part").write_bytes(b"\0" * (len(PAYLOAD) + 10))  # not a prefix of the file
    dest.with_name("x.bin.part.json").write_text(json.dumps({"url": "https://example.invalid/x.bin", "validator": None}))
    assert download("https://example.invalid/x.bin", dest, SHA, progress=False).read_bytes() == PAYLOAD
    assert calls == [f"bytes={len(PAYLOAD) + 10}-", None]


@pytest.mark.parametrize("url", ["ftp://example.com/x.zip", "data:text/plain;base64,aGk=",
                                 "http://example.com/x.zip", "gopher://example.com/x"])
def test_only_https_and_file_urls_are_fetched(tmp_path, url):
    with pytest.raises(DownloadError, match="scheme is refused"):
        download(url, tmp_path / "x.zip", progress=False)


def test_a_redirect_from_https_to_http_is_refused():
    import urllib.request

    from colorray.data.download import _CheckedRedirects

    req = urllib.request.Request("https://example.com/x.zip")
    with pytest.raises(DownloadError, match="away from https"):
        _CheckedRedirects().redirect_request(req, None, 302, "Found", {}, "http://mirror.example.com/x.zip")


def test_every_registry_url_is_https_and_checksums_are_claimed_only_where_they_exist():
    from colorray.data.sources import SOURCES

    for source in SOURCES.values():
        for f in source.files:
            assert f.url is None or f.url.startswith("https://"), f.url
    assert all(f.checksum is None for f in SOURCES["coco2017"].files)  # COCO publishes none
    assert all(f.checksum for name in ("tiny-imagenet", "places365", "colorized-mnist", "celeba")
               for f in SOURCES[name].files)


# ---- downloads that cannot splice two versions, and cannot fill the disk ------------------------

class _NoValidatorHandler(http.server.BaseHTTPRequestHandler):
    """A server that names no version of its file (no ETag, no Last-Modified) and honours Range;
    `body` is what it serves now, `cut` how many bytes it sends before dropping the connection."""

    body = PAYLOAD
    cut: int | None = None
    seen: list = []

    def do_GET(self):
        rng = self.headers.get("Range")
        self.seen.append((rng, self.headers.get("If-Range")))
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = self.body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body if self.cut is None else body[:self.cut])
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a size cap)
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def no_validator_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoValidatorHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NoValidatorHandler.seen, _NoValidatorHandler.cut, _NoValidatorHandler.body = [], None, PAYLOAD
    yield f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    server.shutdown()
    server.server_close()


def test_without_a_version_or_a_checksum_an_interrupted_download_starts_again(tmp_path, no_validator_url):
    """1 MB of the old file + 1 MB of the new one was published before: now the whole new file."""
    from colorray.data.download import IncompleteDownload

    dest = tmp_path / "x.bin"
    _NoValidatorHandler.cut = len(PAYLOAD) // 2
    with pytest.raises(IncompleteDownload, match="starts again"):
        download(no_validator_url, dest, progress=False)
    new = bytes(reversed(PAYLOAD))  # the file changes on the server meanwhile
    _NoValidatorHandler.body, _NoValidatorHandler.cut = new, None
    assert download(no_validator_url, dest, progress=False).read_bytes() == new
    assert _NoValidatorHandler.seen[-1] == (None, None)  # no Range: from byte 0


def test_a_download_past_max_download_bytes_stops_and_leaves_nothing(tmp_path, no_validator_url):
    from colorray.data.download import DownloadTooLarge

    dest = tmp_path / "x.bin"
    with pytest.raises(DownloadTooLarge, match="announces 1,048,576 bytes, over data.max_download_bytes"):
        download(no_validator_url, dest, progress=False, max_bytes=100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """No Content-Length, and bytes until the client hangs up."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_an_endless_response_is_cut_at_max_download_bytes(tmp_path):
    from colorray.data.download import DownloadTooLarge

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadTooLarge, match="more than data.max_download_bytes .3,000,000. bytes"):
            download(f"http://127.0.0.1:{server.server_address[1]}/x", tmp_path / "x.bin", progress=False,
                     max_bytes=3_000_000)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
