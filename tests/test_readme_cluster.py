"""The README's cluster commands, read from README.md (not retyped) and run as a new user runs
them on a fresh machine (the `readme_cluster` fixture of conftest.py: an empty HOME with no
~/.ray/auth_token yet, token authentication, a head and one more node, both on 127.0.0.1), then
a tiny training with the driver environment they leave (RAY_ADDRESS set) that needs both nodes
(the run the cluster tests share, conftest's cluster_run).
A driver with another token is refused. (The sweep and distributed tests use the same cluster.)"""
import json
import re
import subprocess
import sys

import pytest

from conftest import RUN_ITERS, readme_cluster_commands, worker_statuses

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clusters")]


def test_readme_cluster_commands_work_on_a_fresh_machine_and_train_on_two_nodes(readme_cluster, cluster_run):
    commands = readme_cluster_commands()
    assert "ray get-auth-token --generate" in commands and "RAY_AUTH_MODE=token" in commands
    home, env = readme_cluster["home"], readme_cluster["env"]
    assert readme_cluster["home_before"] == []  # the commands started from an empty HOME
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o077 == 0  # the token is readable by its user only
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{readme_cluster['port']}" and env["RAY_AUTH_MODE"] == "token"

    # The training on them: the cluster tests' shared run (conftest's cluster_run), 2 workers
    # placed STRICT_SPREAD with the environment the commands left, so both nodes had to join.
    run_dir, _, returncode, out, _ = cluster_run
    assert returncode == 0, out[-4000:]
    nodes = {s["node_id"] for s in worker_statuses(run_dir).values()}
    assert len(nodes) == 2, nodes
    assert json.loads((run_dir / "metrics" / "train.json").read_text())["iter"] == RUN_ITERS

    # A driver with another token is refused, with an error that says so. (Ray tries again once a
    # second for 20 s before it gives up; the answer is the same each time, so two tries here.)
    wrong = {**env, "RAY_AUTH_TOKEN": "0" * 32, "RAY_gcs_server_port_wait_time_s": "2"}
    r = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print('JOINED')"], env=wrong,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode != 0 and "JOINED" not in r.stdout
    assert re.search(r"(?i)unauthenticated|invalid.*token|authentication", r.stdout + r.stderr), r.stderr[-2000:]


def test_the_suite_finds_every_process_of_its_cluster(readme_cluster):
    """What the suite ends at its close is what `processes_under` finds: the renamed agents
    (`ray::DashboardAgent`, whose command line and environment no longer name the cluster's
    folder) and the dashboard's children included, on both nodes."""
    import psutil

    from conftest import processes_under

    found = {p.pid for p in processes_under(readme_cluster["root"])}
    raylets = [p for p in psutil.process_iter(["pid", "name", "cmdline"])
               if p.info["name"] == "raylet" and str(readme_cluster["root"]) in " ".join(p.info["cmdline"] or ())]
    assert len(raylets) == 2
    for raylet in raylets:
        children = raylet.children(recursive=True)
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {" ".join(c.cmdline()).strip() for c in children}
        assert {raylet.pid, *(c.pid for c in children)} <= found


def test_the_cluster_tests_run_in_one_test_process(request):
    """`make test` (`--dist loadgroup`) keeps the tests of an xdist_group on one test process,
    so this group's cluster and training run are built once: pytest-xdist appends the group to
    each test's id for that. A pytest that ignores it (pytest 9.2 with pytest-xdist 3.8) spreads
    the group over both processes, each building them again, without a word."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run with --dist loadgroup (make test uses it)")
    assert request.node.nodeid.endswith("@clusters"), (
        f"{request.node.nodeid}: --dist loadgroup has no effect with pytest {pytest.__version__}; install "
        "the versions constraints.txt pins (make venv)")
