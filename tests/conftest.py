import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY_IMAGENET_MINI = SHARED / "datasets" / "tiny-imagenet-200-mini.zip"
TINY_IMAGENET_MINI_SHA256 = "406d1bb1595f75faf8c9eaf34fdbf7c719035c6b522d7a27e773fdcb60f98efd"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Ray Train's controller polls its workers every 2 s, and each ray.train.report waits for that
# poll; the tests report every few iterations, so they poll faster (subprocesses inherit it).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# `auto` precision runs as it does for users (probe, then cache), with a cache of this session's
# own: no result of an earlier session or of the user's runs decides what a test measures.
# Subprocesses (dvc repro, Ray workers) inherit it.
_CACHE = tempfile.mkdtemp(prefix="colorray-test-cache-")
os.environ["COLORRAY_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

needs_tiny_imagenet = pytest.mark.skipif(
    not TINY_IMAGENET_MINI.exists(),
    reason=f"needs {TINY_IMAGENET_MINI} (the shared Tiny-ImageNet mini set, present in CI only)",
)


@pytest.fixture(scope="session")
def skimage_shards(tmp_path_factory):
    """The embedded default dataset, fetched and sharded once per test session."""
    from colorray.config import DataParams
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source

    root = tmp_path_factory.mktemp("skimage")
    cfg = DataParams()
    fetch_source(cfg, root / "raw", root / "downloads")
    write_shards(cfg, root / "raw", root / "shards", progress=False)
    return root / "shards"


# Environment for subprocesses that run Ray: no telemetry, every worker's log line shown.
RAY_ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_DEDUP_LOGS": "0"}


@contextlib.contextmanager
def serve_folder(folder, log: list | None = None):
    """`folder` over HTTP on 127.0.0.1 (no Range support, like many servers); yields its URL.
    `log` collects the requested paths."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            if log is not None:
                log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def loopback_cluster(nodes: int = 2, cpus: int = 1):
    """A Ray cluster of `nodes` nodes on 127.0.0.1 started with `ray start`, as on real
    machines; yields the environment a driver needs to join it (RAY_ADDRESS). Every node and
    the driver must agree on authentication: token mode, with the token Ray keeps in
    ~/.ray/auth_token on this machine (a real cluster copies it to each node)."""
    port = 6390 + os.getpid() % 50
    cluster_env = {**RAY_ENV, "RAY_AUTH_MODE": "token"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        for i in range(nodes):
            # The head keeps its dashboard (on loopback): Ray Train V2 removes a finished run's
            # placement group through it; without it a sweep's later trials never get CPUs.
            role = (["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={port + 100}"]
                    if i == 0 else [f"--address=127.0.0.1:{port}"])
            r = subprocess.run([ray_bin, "start", *role, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                                "--disable-usage-stats"], env=cluster_env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield {**cluster_env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=cluster_env, capture_output=True, timeout=120)


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_uri(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; colorray honours that variable as
    the user's choice. A test must not inherit the store of a test before it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
