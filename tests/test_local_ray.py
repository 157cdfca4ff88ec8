"""Ray Train on a Ray instance of this process's own (not a cluster): data-parallel
equivalence of 1 and 2 workers, and the local instance colorray starts listening on loopback
only. (The cluster tests: test_distributed.py.)
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import RAY_ENV as ENV
from conftest import ROOT

pytestmark = pytest.mark.slow

NO_BATCHNORM = {"g_norm": "instance", "d_norm": "instance", "g_dropout_blocks": [],
                "g_channels": 8, "g_channels_max": 32, "d_channels": 8, "g_depth": 4}
OBJECTIVES = {
    "vanilla": {"objective": "vanilla"},
    "wgan-clip": {"objective": "wgan", "n_critic": 2},
    "wgan-gp": {"objective": "wgan-gp", "n_critic": 2},
    "softplus-r1": {"objective": "softplus", "r1_gamma": 10.0},
}
GLOBAL_BATCH, STEPS = 8, 3


def train_objectives(rank: int, world: int) -> dict:
    """K iterations of every objective on the same global batches, this rank taking its slice
    (world 1: the whole batch, in this process); the initial G and the final G and D."""
    from colorray.config import parse_params
    from colorray.train.step import GANTrainer

    out = {}
    for name, gan in OBJECTIVES.items():
        # Plain SGD: Adam's and RMSprop's first steps are about lr * sign(gradient), so a
        # gradient that is 0 up to rounding (summed in another order on 2 ranks) can flip a whole
        # update; SGD keeps the comparison about the gradients, which is what is under test.
        # The critic's rate stays small: at 1e-2 a clipped WGAN critic jumps across its whole
        # +-0.01 box every step, and rounding differences grow ~5x per step (measured).
        p = parse_params({"data": {"image_size": 32}, "model": NO_BATCHNORM, "gan": gan,
                          "train": {"batch_size": GLOBAL_BATCH, "amp": "none", "channels_last": False,
                                    "optimizer": "sgd", "lr_d": 1e-3, "lr_g": 1e-2}})
        trainer = GANTrainer(p, "cpu", rank=rank, world_size=world)
        out[f"{name}-init"] = {k: v.clone() for k, v in trainer.G.state_dict().items()}
        g = torch.Generator().manual_seed(1)
        local = GLOBAL_BATCH // world
        for _ in range(STEPS):
            batches = []
            for _ in range(trainer.batches_needed()):
                L = torch.rand(GLOBAL_BATCH, 1, 32, 32, generator=g) * 2 - 1
                ab = torch.rand(GLOBAL_BATCH, 2, 32, 32, generator=g) * 0.6 - 0.3
                batches.append((L[rank * local:(rank + 1) * local], ab[rank * local:(rank + 1) * local]))
            trainer.train_iteration(batches)
        out[name] = {"G": trainer.G.state_dict(), "D": trainer.D.state_dict()}
    return out


def equivalence_worker(config):
    """Runs inside each Ray worker: train_objectives on this rank's slices; saves the result."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(1)
    torch.save(train_objectives(rank, world), Path(config["out"]) / f"world{world}-rank{rank}.pt")
    ray.train.report({"done": 1})


def _run_equivalence(tmp_path, workers):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(equivalence_worker, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(storage_path=str(tmp_path / "ray"), name=f"eq{workers}")).fit()


@pytest.fixture
def local_ray():
    import ray
    import ray.cloudpickle

    # Ray workers cannot import this test module by name: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_two_workers_with_half_batches_equal_one_worker_with_the_whole(tmp_path, local_ray, one_torch_thread):
    """Two Ray Train workers (DDP), each with half of every batch, end with the parameters of
    plain training on the whole batches in one process (no Ray, no process group)."""
    _run_equivalence(tmp_path, 2)
    one = train_objectives(0, 1)
    r0 = torch.load(tmp_path / "world2-rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "world2-rank1.pt", weights_only=True)
    for name in OBJECTIVES:
        for net in ("G", "D"):
            for key, ref in one[name][net].items():
                assert torch.equal(r0[name][net][key], r1[name][net][key]), (name, net, key)  # ranks agree
                diff = (r0[name][net][key].float() - ref.float()).abs().max().item()
                assert diff <= 1e-5, (name, net, key, diff)
        moved = max((r0[name]["G"][k] - v).abs().max().item() for k, v in r0[f"{name}-init"].items())
        assert moved > 1e-3, name  # the K steps did train
    # WGAN critic weights stay within the clip value on every rank.
    assert max(v.abs().max().item() for v in r0["wgan-clip"]["D"].values() if v.is_floating_point()) <= 0.01 + 1e-9



LISTENERS = r"""
import json, socket, time
import psutil
from colorray.train.worker import init_ray

init_ray()
time.sleep(2)  # the agents bind their ports a moment after ray.init returns
ours = [psutil.Process()] + psutil.Process().children(recursive=True)
listening = sorted({(c.laddr.ip, c.laddr.port, p.name()) for p in ours for c in p.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN})
external = sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})
reachable = []
for ip in external:  # knock on every port from this machine's own network address
    for _, port, name in listening:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((ip, port)) == 0:
                reachable.append([ip, port, name])
print(json.dumps({"listening": listening, "external": external, "reachable": reachable}))
"""


def test_the_local_ray_instance_listens_on_loopback_only(tmp_path):
    """`make run` without RAY_ADDRESS: nothing that Ray started accepts a connection on a
    non-loopback address (a laptop on a shared network exposes nothing during a sweep)."""
    env = {k: v for k, v in ENV.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    r = subprocess.run([sys.executable, "-c", LISTENERS], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(found["listening"]) >= 5  # GCS, raylet, workers, agents, dashboard: all there
    loopback = ("127.", "::ffff:127.", "::1")
    assert all(ip.startswith(loopback) for ip, _, _ in found["listening"]), found["listening"]
    assert found["reachable"] == [], found
