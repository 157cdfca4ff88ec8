"""The README's cluster commands, read from README.md (not retyped) and run as a new user runs
them on a fresh machine: an empty HOME (no ~/.ray/auth_token yet), token authentication, a
head and one more node (both on 127.0.0.1 here), then a tiny training with RAY_ADDRESS set
that needs both nodes. A driver with another token is refused."""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import RAY_ENV, ROOT, SESSION_DIR, end_processes_under, free_ports, processes_under

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clusters")]

MARK = "<!-- cluster-commands:"


def readme_cluster_commands() -> str:
    """The sh block that follows the cluster-commands marker in README.md."""
    text = (ROOT / "README.md").read_text()
    assert MARK in text, "README.md lost its cluster-commands block"
    block = re.compile(r"```sh\n(.*?)```", re.S).search(text, text.index(MARK))
    return block.group(1)


def test_readme_cluster_commands_work_on_a_fresh_machine_and_train_on_two_nodes(tmp_path, skimage_shards):
    commands = readme_cluster_commands()
    assert "ray get-auth-token --generate" in commands and "RAY_AUTH_MODE=token" in commands
    root = Path(tempfile.mkdtemp(prefix="r", dir=SESSION_DIR / "ray"))  # this cluster's RAY_TMPDIR
    home = root / "home"
    home.mkdir()
    # The only changes to the README's text: a free port instead of 6379 and free ports for the
    # head's dashboard and client server (another Ray on this machine may hold the defaults).
    port, dashboard, client = free_ports(3)
    script = commands.replace("6379", str(port)).replace(
        "ray start --head", f"ray start --head --dashboard-port={dashboard} --ray-client-server-port={client}")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 3},
        "train": {"iters": 4, "batch_size": 8, "checkpoint_every": 4},
        "ray": {"num_workers": 2, "cpus_per_worker": 1, "report_every": 2, "eval_every": 4,
                "placement_strategy": "STRICT_SPREAD",  # one worker on each node: both must have joined
                "storage_path": str(tmp_path / "ray")},
        "loader": {"num_workers": 0}}))
    train = (f"{sys.executable} -m colorray.cli train --params {params} --shards {skimage_shards} --root {tmp_path}"
             f" --models {tmp_path / 'models'} --metrics {tmp_path / 'metrics'} --best ''")
    env = {k: v for k, v in RAY_ENV.items() if not k.startswith("RAY_AUTH")}
    env.update({"HOME": str(home), "RAY_TMPDIR": str(root), "HEAD_IP": "127.0.0.1", "NODE_IP": "127.0.0.1",
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
    assert not (home / ".ray").exists()
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{script}\n{train}\n"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        assert (home / ".ray" / "auth_token").stat().st_mode & 0o077 == 0  # the token is the user's only
        nodes = {json.loads(f.read_text())["node_id"] for f in (tmp_path / "ray").glob("colorray-*/worker-*.json")}
        assert len(nodes) == 2, nodes
        assert json.loads((tmp_path / "metrics" / "train.json").read_text())["iter"] == 4

        # A driver with another token is refused, with an error that says so.
        wrong = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        r = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print('JOINED')"], env=wrong,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode != 0 and "JOINED" not in r.stdout
        assert re.search(r"(?i)unauthenticated|invalid.*token|authentication", r.stdout + r.stderr), r.stderr[-2000:]
    finally:
        end_processes_under(root)
    assert processes_under(root) == []
