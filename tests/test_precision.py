"""train.amp / train.channels_last = auto: the probe picks the fastest mode, the cache answers
later runs, explicit values win, and every rank of a run gets rank 0's choice."""
import json
import os
import time
import warnings

import pytest
import torch

from colorray import precision as prec
from colorray.config import parse_params
from colorray.train.step import GANTrainer, metric_values, resolve_precision

TINY = {"model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4}, "data": {"image_size": 32},
        "train": {"batch_size": 4}}
CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORRAY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


def _fake_steps(costs: dict, calls: list):
    """make_step for `choose`: a mode 'costs' that many seconds per iteration."""
    def make_step(amp, cl):
        calls.append((amp, cl))
        return lambda: time.sleep(costs[prec.mode_label(amp, cl)])
    return make_step


def test_auto_probes_once_picks_the_fastest_mode_and_then_answers_from_the_cache(cache, monkeypatch):
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: True)
    costs = {"fp32/contiguous": 0.03, "fp32/channels_last": 0.04, "bf16/contiguous": 0.02, "bf16/channels_last": 0.005}
    calls = []
    first = prec.choose("auto", "auto", CPU, {"batch": 4}, _fake_steps(costs, calls), log=lambda m: None)
    assert (first.amp, first.channels_last, first.source) == ("bf16", True, "probe")
    assert set(first.seconds) == set(costs) and first.probe_s > 0
    assert len(calls) == 4 and cache.exists()
    again = prec.choose("auto", "auto", CPU, {"batch": 4}, _fake_steps(costs, calls), log=lambda m: None)
    assert (again.amp, again.channels_last, again.source) == ("bf16", True, "cache") and len(calls) == 4
    # another key (batch, architecture, device): measured again
    prec.choose("auto", "auto", CPU, {"batch": 8}, _fake_steps(costs, calls), log=lambda m: None)
    assert len(calls) == 8
    assert len(json.loads(cache.read_text())) == 2


def test_the_probe_budget_is_the_environment_s_and_each_mode_is_timed_at_least_once(cache, monkeypatch):
    """COLORRAY_PROBE_BUDGET_S: a budget smaller than one round still builds, runs and times every
    mode (one untimed and one timed run each); the default budget gives fast steps 5 timed rounds."""
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: True)
    monkeypatch.setattr(prec, "SLOWER", float("inf"))  # no mode drops out on a sleep that ran long
    runs: dict = {}

    def make_step(amp, cl):
        label = prec.mode_label(amp, cl)
        runs[label] = 0

        def step():
            runs[label] += 1
            time.sleep(0.01)
        return step

    monkeypatch.setenv(prec.BUDGET_VAR, "0.001")
    short = prec.choose("auto", "auto", CPU, {"batch": 4}, make_step, log=lambda m: None)
    assert set(runs.values()) == {2} and set(short.seconds) == set(runs) and short.source == "probe"
    monkeypatch.delenv(prec.BUDGET_VAR)
    prec.choose("auto", "auto", CPU, {"batch": 8}, make_step, log=lambda m: None)
    assert set(runs.values()) == {6}  # 1 untimed + 5 rounds, well within PROBE_BUDGET_S
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(prec.BUDGET_VAR, bad)
        with pytest.raises(ValueError, match=f"COLORRAY_PROBE_BUDGET_S='{bad}': expected a number of seconds > 0"):
            prec.choose("auto", "auto", CPU, {"batch": 16}, make_step, log=lambda m: None)


def test_a_clearly_slower_mode_is_timed_once(cache, monkeypatch):
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: True)
    runs = {}

    def make_step(amp, cl):
        label = prec.mode_label(amp, cl)
        runs[label] = 0

        def step():
            runs[label] += 1
            time.sleep(0.2 if amp == "bf16" else 0.01)  # bf16 emulated: 20x slower
        return step

    choice = prec.choose("auto", "auto", CPU, {"w": 1}, make_step, log=lambda m: None)
    assert choice.amp == "none"
    assert runs["bf16/contiguous"] == runs["bf16/channels_last"] == 2  # warm-up + one timed round
    assert runs["fp32/contiguous"] >= 3


def test_explicit_values_win_over_the_probe_and_the_cache(cache, monkeypatch):
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: True)
    calls = []
    costs = {"fp32/contiguous": 0.03, "fp32/channels_last": 0.04, "bf16/contiguous": 0.001, "bf16/channels_last": 0.002}
    prec.choose("auto", "auto", CPU, {"batch": 4}, _fake_steps(costs, calls), log=lambda m: None)
    explicit = prec.choose("none", False, CPU, {"batch": 4}, _fake_steps(costs, calls), log=lambda m: None)
    assert (explicit.amp, explicit.channels_last, explicit.source) == ("none", False, "explicit")
    # one half explicit: auto chooses the other half only
    half = prec.choose("none", "auto", CPU, {"batch": 4}, _fake_steps(costs, calls), log=lambda m: None)
    assert half.amp == "none" and set(half.seconds) == {"fp32/contiguous", "fp32/channels_last"}
    assert not half.channels_last  # 0.03 < 0.04


def test_bf16_is_not_a_cpu_candidate_without_native_bf16(monkeypatch):
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: False)
    assert prec.candidates("auto", "auto", CPU) == [("none", False), ("none", True)]
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: True)
    assert ("bf16", True) in prec.candidates("auto", "auto", CPU)
    assert prec.candidates("auto", False, CPU) == [("none", False), ("bf16", False)]


def test_explicit_bf16_on_a_cpu_that_emulates_it_warns_once(cache, monkeypatch):
    monkeypatch.setattr(prec, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(prec, "_warned", False)
    with pytest.warns(UserWarning, match="without native bf16.*20x slower"):
        p = prec.choose("bf16", True, CPU, {}, make_step=None)
    assert (p.amp, p.channels_last) == ("bf16", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prec.choose("bf16", True, CPU, {}, make_step=None)


def test_the_device_signature_names_the_cpu_its_isa_and_torch():
    sig = prec.device_signature(CPU)
    model, _ = prec._cpu_info()
    assert model in sig and torch.__version__ in sig and torch.backends.cpu.get_cpu_capability() in sig


def test_the_trainer_resolves_auto_with_the_real_step_and_records_the_choice(cache):
    params = parse_params(TINY)
    assert (params.train.amp, params.train.channels_last) == ("auto", "auto")
    logs = []
    trainer = GANTrainer(params, log=logs.append)
    assert trainer.precision.source == "probe" and trainer.precision.label in trainer.precision.seconds
    assert trainer.precision.probe_s > 0 and any("precision" in m for m in logs)
    assert GANTrainer(params).precision.source == "cache"
    assert trainer.params == params  # the checkpoint keeps `auto`: resuming elsewhere measures there
    assert trainer.memory_format == (torch.channels_last if trainer.precision.channels_last
                                     else torch.contiguous_format)


def test_an_iteration_returns_its_metrics_on_the_device_without_reading_them(cache):
    p = parse_params({**TINY, "train": {"batch_size": 4, "amp": "none", "channels_last": False}})
    trainer = GANTrainer(p)
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(4, 1, 32, 32, generator=g) * 2 - 1, torch.rand(4, 2, 32, 32, generator=g) * 0.6 - 0.3)
    m = trainer.train_iteration([batch])
    assert all(torch.is_tensor(v) for k, v in m.items() if not k.startswith("lr/"))
    values = metric_values(m)
    assert values.keys() == m.keys() and all(isinstance(v, float) for v in values.values())
    assert values["loss/g/l1"] == pytest.approx(float(m["loss/g/l1"]))


def _broadcast_worker(rank, world, init_file, caches, out):
    os.environ["COLORRAY_CACHE_DIR"] = caches[rank]
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        choice = resolve_precision(parse_params(TINY), CPU, batch=2, rank=rank, world_size=world, log=lambda m: None)
        with open(out[rank], "w") as f:
            json.dump({"amp": choice.amp, "channels_last": choice.channels_last, "source": choice.source}, f)
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_computes_in_rank_0s_choice(tmp_path):
    """Rank 1's own cache says otherwise; it still gets what rank 0 decided."""
    params = parse_params(TINY)
    workload = prec.as_workload(params, 2)
    modes = prec.candidates("auto", "auto", CPU)
    key = prec.cache_key(prec.device_signature(CPU), workload, modes)
    caches = [str(tmp_path / "rank0"), str(tmp_path / "rank1")]
    for cache_dir, cl in zip(caches, (True, False)):
        os.environ["COLORRAY_CACHE_DIR"] = cache_dir
        try:
            prec.remember(key, prec.Precision("none", cl, "probe", {"fp32/contiguous": 1.0}), "test", workload)
        finally:
            os.environ.pop("COLORRAY_CACHE_DIR")
    out = [str(tmp_path / "out0.json"), str(tmp_path / "out1.json")]
    torch.multiprocessing.spawn(_broadcast_worker, args=(2, str(tmp_path / "init"), caches, out), nprocs=2)
    results = [json.loads(open(o).read()) for o in out]
    assert results[0] == results[1] == {"amp": "none", "channels_last": True, "source": "cache"}
