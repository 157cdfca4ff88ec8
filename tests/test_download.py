import hashlib
import http.server
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


def test_file_url_download_resumes_from_a_partial_file(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "x.bin"
    # A previous, interrupted download left the first 300 kB.
    dest.with_name("x.bin.part").write_bytes(PAYLOAD[:300_000])
    assert download(src.as_uri(), dest, SHA, progress=False).read_bytes() == PAYLOAD
    dest.unlink()
    dest.with_name("x.bin.part").write_bytes(b"\xff" * 300_000)
    with pytest.raises(ChecksumError):  # proves the partial bytes were kept, not re-fetched
        download(src.as_uri(), dest, SHA, progress=False)


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
    dest = tmp_path / "x.bin"
    dest.with_name("x.bin.part").write_bytes(PAYLOAD[:123_456])
    assert download(http_url, dest, SHA, progress=False).read_bytes() == PAYLOAD
    assert _RangeHandler.requests == ["bytes=123456-"]
    # A verified file under the final name is reused: no second request.
    download(http_url, dest, SHA, progress=False)
    assert len(_RangeHandler.requests) == 1


def test_unreachable_host_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(DownloadError, match="file:///"):
        download("http://127.0.0.1:9/data.zip", tmp_path / "x.zip", progress=False)
