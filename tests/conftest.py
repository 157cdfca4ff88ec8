import atexit
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
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
# Ray Train's preemption watcher (an actor, so a process importing Ray, in every Ray Train run)
# waits for a node to be drained (a spot instance reclaimed): no node of the suite's clusters is,
# and Ray offers this switch to leave it out. Users' runs keep it.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Ray's log monitor (a process on every node) looks for new worker log files ten times a second
# until its node has 1,000 of them, then twice a second. The suite's nodes start hundreds of
# short-lived workers and actors, and rescanning their folder is most of its work: with 186
# files, 2.3 -> 1.3 CPU-s a minute a node when it rescans twice a second from the start (the
# price: a new worker's first lines reach its driver up to half a second later). Users' clusters
# keep Ray's default.
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
# `make test` runs two pytest workers on two cores: each worker's torch (and the stages it
# starts) gets its share of the cores, not all of them. Two workers each running two OpenMP
# threads on two cores spin-wait on each other: the preset tests took twice as long that way.
# (Ray Train workers set their own thread count, ray.cpus_per_worker.)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# The suite is hermetic: everything it (and every process it starts: dvc, Ray, MLflow) would
# keep in HOME, ~/.cache, ~/.config or Ray's /tmp/ray goes to a folder of this session's own,
# removed at the end. Nothing of the user's is read (no ~/.ray/auth_token, no cluster address,
# no tracking server) and nothing is left there. Short path: Ray's socket paths live under it
# and must stay under 108 bytes.
SESSION_DIR = Path(tempfile.mkdtemp(prefix="crt-", dir="/tmp"))
for _name in ("home", "ray", "cache", "tmp"):
    (SESSION_DIR / _name).mkdir()
os.environ.update({
    # Temporary files of the suite and of every process it starts (a killed worker's checkpoint
    # staging folder, say) end with the session's folder instead of piling up in /tmp.
    "TMPDIR": str(SESSION_DIR / "tmp"),
    "HOME": str(SESSION_DIR / "home"),
    "XDG_CACHE_HOME": str(SESSION_DIR / "home" / ".cache"),
    "XDG_CONFIG_HOME": str(SESSION_DIR / "home" / ".config"),
    "XDG_DATA_HOME": str(SESSION_DIR / "home" / ".local" / "share"),
    "RAY_TMPDIR": str(SESSION_DIR / "ray"),
    # `auto` precision runs as it does for users (probe, then cache), with a cache of this
    # session's own: no result of an earlier session or of the user's runs decides what a test
    # measures.
    "COLORRAY_CACHE_DIR": str(SESSION_DIR / "cache"),
    # ... and a short probe: every mode still built, run and timed (one round instead of up to
    # five in 20 s: 19 -> 9 CPU-s for the demo nets). Which mode wins is not what the DAG,
    # sweep and cluster tests check; test_precision.py tests the probe itself.
    "COLORRAY_PROBE_BUDGET_S": "2",
})
tempfile.tempdir = None  # tempfile reads TMPDIR again
for _name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "MLFLOW_TRACKING_URI",
              "MLFLOW_REGISTRY_URI", "TORCH_HOME"):
    os.environ.pop(_name, None)


# Hypothesis keeps no example database (it would write .hypothesis/ into the project).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("colorray", database=None)
_hypothesis_settings.load_profile("colorray")


def processes_under(folder: Path) -> list:
    """This user's processes that belong to `folder`: those whose command line, environment or
    open files name it (the Ray processes started with their temp dir there), and every
    descendant of those. Ray's agents rename themselves (`ray::DashboardAgent`), which
    overwrites both their command line and their environment in /proc: only their open log
    files, or their parent raylet, still tie them to the folder."""
    import psutil

    key, found = str(folder), {}
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
            continue
        try:
            if (key in " ".join(proc.info["cmdline"] or ()) or key in proc.environ().get("RAY_TMPDIR", "")
                    or any(f.path.startswith(key) for f in proc.open_files())):
                found[proc.pid] = proc
                found.update((c.pid, c) for c in proc.children(recursive=True) if c.pid != os.getpid())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return list(found.values())


def end_processes_under(folder: Path, timeout: float = 5) -> None:
    """End, by pid, exactly the processes `processes_under(folder)` finds: SIGTERM, then SIGKILL
    what is left after `timeout` s. Never `ray stop` (it ends every Ray process of the user)."""
    import psutil

    procs = processes_under(folder)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)


def _end_session():
    end_processes_under(SESSION_DIR)
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


atexit.register(_end_session)


def pytest_sessionfinish(session, exitstatus):
    """A Ray process the suite started and did not end is a failure of the suite (reported
    here; atexit then ends it by pid)."""
    import psutil

    def ends_with_us(p) -> bool:
        """multiprocessing's helper processes of this process (the resource tracker of a
        DataLoader, say) exit when it does."""
        try:
            return p.ppid() == os.getpid() and "from multiprocessing." in " ".join(p.cmdline())
        except psutil.Error:
            return True

    if getattr(session.config.option, "numprocesses", None):
        # The controller of `pytest -n`: its test processes (its children) have reported their
        # last test, and end their clusters and sessions now; they are this session's
        # processes too. Let them finish first (each checks its own processes the same way).
        psutil.wait_procs([p for p in psutil.Process().children() if not ends_with_us(p)], timeout=120)
    procs = [p for p in processes_under(SESSION_DIR) if not ends_with_us(p)]
    _, left = psutil.wait_procs(procs, timeout=15)  # a Ray shutting down takes a moment
    if left:
        def named(p) -> str:
            try:
                return f"{p.pid} ({' '.join(p.cmdline())[:80]})"
            except psutil.Error:
                return str(p.pid)

        names = ", ".join(named(p) for p in left)
        print(f"\nprocesses the suite started are still running: {names}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 now (the OS picks them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


needs_tiny_imagenet = pytest.mark.skipif(
    not TINY_IMAGENET_MINI.exists(),
    reason=f"needs {TINY_IMAGENET_MINI} (the shared Tiny-ImageNet mini set, present in CI only)",
)


def jpeg_bytes(seed: int, size=(24, 20)) -> bytes:
    """A JPEG of random colours, `size` (width, height), the same for the same seed."""
    import io

    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def tiny_imagenet_zip(path: Path, wnids: list[str], per_class: int, val: int, size=(24, 20)) -> str:
    """A zip in Tiny-ImageNet-200's official layout (wnids.txt, words.txt, train/<wnid>/images
    with each class's boxes file, val/images with val_annotations.txt, and a test/ folder that
    colorray must never extract); returns its sha256."""
    import hashlib

    files = {"tiny-imagenet-200/wnids.txt": "".join(f"{w}\n" for w in wnids).encode(),
             "tiny-imagenet-200/words.txt": "".join(f"{w}\tclass {w}\n" for w in wnids).encode()}
    for c, wnid in enumerate(wnids):
        files[f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt"] = b""
        for i in range(per_class):
            files[f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG"] = jpeg_bytes(c * per_class + i, size)
    ann = []
    for i in range(val):
        files[f"tiny-imagenet-200/val/images/val_{i}.JPEG"] = jpeg_bytes(100_000 + i, size)
        ann.append(f"val_{i}.JPEG\t{wnids[i % len(wnids)]}\t0\t0\t{size[0] - 1}\t{size[1] - 1}")
    files["tiny-imagenet-200/val/val_annotations.txt"] = "\n".join(ann).encode()
    files["tiny-imagenet-200/test/images/test_0.JPEG"] = jpeg_bytes(999_999, size)
    return hashlib.sha256(write_zip(path, files).read_bytes()).hexdigest()


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    """A zip of these members (name -> bytes) at `path`; returns the path."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return Path(path)


@pytest.fixture(scope="session")
def skimage_shards(tmp_path_factory):
    """The embedded default dataset, fetched and sharded once per test session: under `pytest
    -n`, once for all its test processes (in the session's own folder, which pytest-xdist gives
    them as the parent of each one's temp folder): the first builds it, the others wait for it.
    Read-only for the tests."""
    import fcntl

    from colorray.config import DataParams
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "skimage"
    with open(base / "skimage.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process ends
        if not root.exists():
            partial = base / "skimage.partial"
            shutil.rmtree(partial, ignore_errors=True)  # a process that died building it
            cfg = DataParams()
            fetch_source(cfg, partial / "raw", partial / "downloads")
            write_shards(cfg, partial / "raw", partial / "shards", progress=False)
            partial.rename(root)
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


README_CLUSTER_MARK = "<!-- cluster-commands:"


def readme_cluster_commands() -> str:
    """The sh block that follows the cluster-commands marker in README.md, as written there."""
    import re

    text = (ROOT / "README.md").read_text()
    assert README_CLUSTER_MARK in text, "README.md lost its cluster-commands block"
    return re.compile(r"```sh\n(.*?)```", re.S).search(text, text.index(README_CLUSTER_MARK)).group(1)


@pytest.fixture(scope="session")
def readme_cluster():
    """The cluster the cluster tests share (one per test session: starting one costs seconds of
    both cores): started by the README's own cluster commands, as a new user runs them on a
    fresh machine (an empty HOME, so no token yet), with both "nodes" on 127.0.0.1. The only
    changes to the README's text: free ports instead of 6379 and the head's dashboard/client
    defaults (another Ray on this machine may hold them), and one CPU per node (so work spread
    over two CPUs lands on both nodes). Yields the driver's environment (RAY_ADDRESS, the
    token's HOME), the commands' output, the cluster's folder and its port."""
    commands = readme_cluster_commands()
    root = Path(tempfile.mkdtemp(prefix="r", dir=SESSION_DIR / "ray"))  # the cluster's RAY_TMPDIR
    home = root / "home"
    home.mkdir()
    port, dashboard, client = free_ports(3)
    script = (commands.replace("6379", str(port))
              .replace("ray start --head", f"ray start --head --dashboard-port={dashboard} "
                                           f"--ray-client-server-port={client} --num-cpus=1")
              .replace("ray start --address", "ray start --num-cpus=1 --address"))
    env = {k: v for k, v in RAY_ENV.items() if not k.startswith("RAY_AUTH")}
    env.update({"HOME": str(home), "RAY_TMPDIR": str(root), "HEAD_IP": "127.0.0.1", "NODE_IP": "127.0.0.1",
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
    home_before = sorted(p.name for p in home.iterdir())
    try:
        # The commands, then the environment they leave for the driver (step 3 exports it).
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{script}\nenv -0 > {root}/driver.env\n"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        driver = dict(line.split("=", 1) for line in (root / "driver.env").read_text().split("\0") if "=" in line)
        _LIVE_CLUSTERS.append(root)
        yield {"env": driver, "output": r.stdout + r.stderr, "root": root, "home": home, "port": port,
               "home_before": home_before}
    finally:
        end_processes_under(root)


_LIVE_CLUSTERS: list[Path] = []  # the readme_cluster of this test process, while it runs


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """The README's cluster ends after the last test that uses it (in collection order), not
    at the end of the session: an idle cluster of two nodes costs about 4 CPU-s a minute, and the
    other tests of its test process run for minutes after the cluster tests."""
    if not _LIVE_CLUSTERS or "readme_cluster" not in item.fixturenames:
        return
    later = item.session.items[item.session.items.index(item) + 1:]
    if not any("readme_cluster" in other.fixturenames for other in later):
        end_processes_under(_LIVE_CLUSTERS.pop())


# ---- the two-node training run the cluster tests share (test_distributed.py, test_readme_cluster.py)

VAL_IMAGES = 64  # metrics.val_images of the cluster, sweep and DAG tests' runs


def project_params(tmp_path, **sections):
    """A params.yaml for `colorray train` on the cluster: tiny nets, 2 workers, 12 iterations,
    val metrics on 64 images; `sections` override."""
    import yaml

    base = {"model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 3},
            "train": {"iters": 12, "batch_size": 8, "checkpoint_every": 4},
            "ray": {"num_workers": 2, "cpus_per_worker": 1, "report_every": 2, "eval_every": 12,
                    "storage_path": str(tmp_path / "ray")},
            "loader": {"num_workers": 0}, "metrics": {"val_images": VAL_IMAGES}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def train_cmd(tmp_path, params, shards):
    # --best '': the project's tune/best_params.yaml (whatever the last `make run` chose, e.g.
    # n_critic 2) must not change what these tests train.
    return [sys.executable, "-m", "colorray.cli", "train", "--params", str(params), "--shards", str(shards),
            "--root", str(tmp_path), "--models", str(tmp_path / "models"), "--metrics", str(tmp_path / "metrics"),
            "--best", ""]


def worker_statuses(tmp_path):
    """rank -> what that Ray Train worker last wrote of itself (pid, node, iteration, batches)."""
    return {int(Path(f).stem.split("-")[1]): json.loads(Path(f).read_text())
            for f in glob.glob(str(tmp_path / "ray" / "colorray-*" / "worker-*.json"))}


@pytest.fixture(scope="session")
def uneven_shards(tmp_path_factory, skimage_shards):
    """Odd number of training shards, the last one nearly empty (raw records: one chunk of a
    chosen size per shard; the DAG tests train on the default JPEG shards)."""
    from colorray.config import DataParams
    from colorray.data.shards import read_manifest, write_shards

    n = read_manifest(skimage_shards)["splits"]["train"]["count"]
    # One chunk per shard; a chunk size that leaves an odd number of shards, the last with 1-3 images.
    chunk = next(c for c in range(100, 1000) if 1 <= n % c <= 3 and (n // c + 1) % 2 == 1)
    out = tmp_path_factory.mktemp("uneven") / "shards"
    write_shards(DataParams(encoding="raw", compression="none", chunk_size=chunk, shard_max_mb=0.01),
                 skimage_shards.parent / "raw", out, progress=False)
    shards = read_manifest(out)["splits"]["train"]["shards"]
    assert len(shards) % 2 == 1 and shards[-1]["count"] <= 3, [s["count"] for s in shards]
    return out


RUN_ITERS = 24


@pytest.fixture(scope="session")  # built once even if another module's tests run in between
def cluster_run(tmp_path_factory, uneven_shards, readme_cluster):
    """The one training run on the README's cluster that the cluster tests examine (a Ray Train
    run costs about a minute here): `colorray train` with the driver environment the README's
    commands leave (readme_cluster: RAY_ADDRESS, the token), 2 workers, one per node
    (STRICT_SPREAD, so both nodes must have joined), over an odd number of shards with the last
    nearly empty, which both nodes stream from a loopback HTTP server (as from object storage on
    a real cluster); the rank-1 worker process is killed (SIGKILL) once it has passed iteration 8
    and a checkpoint exists. Returns the run's folder, the killed worker's last status, the exit
    code, the output and the paths the HTTP server served."""
    tmp_path = tmp_path_factory.mktemp("cluster-run")
    params = project_params(tmp_path, train={"iters": RUN_ITERS, "checkpoint_every": 4},
                            ray={"placement_strategy": "STRICT_SPREAD"})
    served = []
    with serve_folder(uneven_shards, served) as url:
        proc = subprocess.Popen(train_cmd(tmp_path, params, url), cwd=ROOT, env=readme_cluster["env"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline, killed = time.time() + 300, None
            while time.time() < deadline and killed is None and proc.poll() is None:
                st = worker_statuses(tmp_path)
                if 1 in st and st[1]["iter"] >= 8 and glob.glob(str(tmp_path / "ray" / "colorray-*" / "checkpoint_*")):
                    killed = st[1]
                    os.kill(killed["pid"], signal.SIGKILL)
                time.sleep(0.2)
            out, _ = proc.communicate(timeout=600)
        finally:
            proc.kill()
    assert killed is not None, "the rank-1 worker never reached iteration 8:\n" + out[-3000:]
    return tmp_path, killed, proc.returncode, out, served


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny tensors: faster, and far faster on a busy
    2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_uri(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; colorray honours that variable as
    the user's choice. A test must not inherit the store of a test before it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
