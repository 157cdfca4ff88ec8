"""`train.amp: auto` / `train.channels_last: auto`: the fastest precision and memory layout for
the device the step runs on, chosen by measurement and remembered.

No fixed choice is right everywhere: bf16 autocast is 1.5x faster than fp32 on a CPU with
AVX512-BF16 and 20x slower on one with AVX2 only (it is emulated there), and channels_last helps
on some CPUs and GPUs and hurts on others (docs/benchmarks.md). So `auto` times a few real
iterations of the configured step in each mode the device supports (`candidates`) and takes the
fastest. The result is cached on disk (`cache_path`), keyed by the device signature (CPU model,
its vector/matrix flags and the ISA torch and oneDNN use, or the GPU; torch version; threads),
the architecture and the batch, so later runs, sweep trials and Ray workers on the same kind of
machine pay nothing. An explicit value in params.yaml is never second-guessed.

This module knows nothing of the GAN: `choose` gets a function that builds one timed step for
a mode (colorray.train.step.resolve_precision passes the real GANTrainer step).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from colorray.atomic import write_json_atomic

PROBE_BUDGET_S = 20.0  # the whole probe, on the default architecture at 64 px, batch 32, 2 cores
BUDGET_VAR = "COLORRAY_PROBE_BUDGET_S"  # another budget (seconds), e.g. a shorter one on a slow laptop
SLOWER = 1.5  # a mode this many times slower than the best is not timed again
CACHE_FILE = "precision.json"


@dataclass(frozen=True)
class Precision:
    """What the step runs in, and how that was decided (explicit | cache | probe)."""

    amp: str  # none | bf16 | fp16
    channels_last: bool
    source: str = "explicit"
    seconds: dict = field(default_factory=dict)  # seconds per iteration of each probed mode
    probe_s: float = 0.0  # what the probe cost (0 when cached or explicit)

    @property
    def label(self) -> str:
        return mode_label(self.amp, self.channels_last)

    def summary(self) -> str:
        timed = ", ".join(f"{k} {v:.3g} s/iter" for k, v in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        how = {"probe": f"measured now in {self.probe_s:.1f} s", "cache": "measured before on this device (cached)",
               "explicit": "as params.yaml sets it"}[self.source]
        return f"precision {self.label} ({how}{'; ' + timed if timed else ''})"

    def tags(self) -> dict:
        """Flat values for MLflow tags and metrics/train.json."""
        out = {"amp": self.amp, "channels_last": self.channels_last, "source": self.source,
               "probe_s": round(self.probe_s, 2)}
        out.update({f"s_per_iter/{k}": round(v, 5) for k, v in self.seconds.items()})
        return out


FP32 = Precision("none", False)  # for a trainer that only loads or saves weights: nothing to measure


def mode_label(amp: str, channels_last: bool) -> str:
    return f"{'fp32' if amp == 'none' else amp}/{'channels_last' if channels_last else 'contiguous'}"


# ---- the device -------------------------------------------------------------------------------

def _cpu_info() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; elsewhere the platform's processor name, no flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and model == platform.machine():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_description() -> str:
    """'AMD EPYC, avx512_bf16 avx512f ... (torch ISA AVX512)': what every recorded figure names."""
    model, flags = _cpu_info()
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "bf16", "sve", "sve2"))
    return (f"{model}, {' '.join(isa) or 'no avx2/avx512/amx flags'} "
            f"(torch ISA {torch.backends.cpu.get_cpu_capability()}"
            f"{', ONEDNN_MAX_CPU_ISA=' + os.environ['ONEDNN_MAX_CPU_ISA'] if os.environ.get('ONEDNN_MAX_CPU_ISA') else ''})")


def device_signature(device: torch.device) -> str:
    """What decides which mode is fastest: the hardware, the kernels torch may use on it (the
    ISA torch and oneDNN were told to use: ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), torch's
    version and the thread count."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (f"cuda {torch.cuda.get_device_name(device)} sm{major}{minor} torch {torch.__version__} "
                f"cuda {torch.version.cuda}")
    return f"cpu {cpu_description()} torch {torch.__version__} threads {torch.get_num_threads()}"


def native_cpu_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX512-BF16, AMX-BF16, ARM BF16) that torch may use. Without
    it autocast emulates bf16 (measured 20x slower than fp32 on an AVX2 EPYC), so bf16 is not
    even tried: its first iteration alone would take longer than the whole probe."""
    _, flags = _cpu_info()
    capability = torch.backends.cpu.get_cpu_capability()
    if flags & {"avx512_bf16", "amx_bf16"} and capability.startswith("AVX512"):
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # honours ONEDNN_MAX_CPU_ISA
        except (AttributeError, RuntimeError):
            return True
    return "bf16" in flags and platform.machine() in ("aarch64", "arm64")


def candidates(amp: str, channels_last: str | bool, device: torch.device) -> list[tuple[str, bool]]:
    """The modes `auto` chooses among on `device`, fp32 contiguous first; an explicit amp or
    layout fixes that half."""
    if amp == "auto":
        amps = ["none"]
        if device.type == "cuda":
            amps += ["bf16"] if torch.cuda.is_bf16_supported() else []
            amps += ["fp16"]
        elif device.type == "cpu" and native_cpu_bf16():
            amps.append("bf16")
    else:
        amps = [amp]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    return [(a, cl) for a in amps for cl in layouts]


# ---- the cache --------------------------------------------------------------------------------

def cache_path() -> Path:
    """$COLORRAY_CACHE_DIR, else $XDG_CACHE_HOME/colorray, else ~/.cache/colorray."""
    root = os.environ.get("COLORRAY_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colorray"
    return Path(root) / CACHE_FILE


def cache_key(signature: str, workload: dict, modes: list[tuple[str, bool]]) -> str:
    blob = json.dumps({"device": signature, "workload": workload, "modes": modes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: unreadable precision cache ({e}); it is measured again and rewritten")
        return {}
    return data if isinstance(data, dict) else {}


def cached(key: str) -> Precision | None:
    entry = _read_cache(cache_path()).get(key)
    try:
        return Precision(entry["amp"], bool(entry["channels_last"]), "cache", dict(entry["seconds"]))
    except (KeyError, TypeError):
        return None


def remember(key: str, choice: Precision, signature: str, workload: dict) -> None:
    """Add one entry (read, merge, atomic rewrite: a concurrent writer can only cost a re-probe)."""
    path = cache_path()
    data = _read_cache(path)
    data[key] = {"amp": choice.amp, "channels_last": choice.channels_last, "seconds": choice.seconds,
                 "probe_s": round(choice.probe_s, 2), "device": signature, "workload": workload,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        write_json_atomic(path, data, sort_keys=True)
    except OSError as e:  # a read-only home: the choice still holds for this run
        warnings.warn(f"could not write the precision cache {path}: {e}")


# ---- the probe --------------------------------------------------------------------------------

def probe_budget() -> float:
    """Seconds the probe may spend: $COLORRAY_PROBE_BUDGET_S, else PROBE_BUDGET_S. Every mode
    still runs once untimed and once timed, whatever the budget; more rounds while it lasts."""
    raw = os.environ.get(BUDGET_VAR)
    if raw is None or raw == "":
        return PROBE_BUDGET_S
    try:
        budget = float(raw)
    except ValueError:
        budget = 0.0  # refused below, as a non-positive or infinite (or nan) number is
    if not 0 < budget < float("inf"):
        raise ValueError(f"{BUDGET_VAR}={raw!r}: expected a number of seconds > 0 (unset: {PROBE_BUDGET_S:g})")
    return budget


def measure(modes: list[tuple[str, bool]], make_step: Callable[[str, bool], Callable[[], None]],
            sync: Callable[[], None] = lambda: None, budget_s: float = PROBE_BUDGET_S) -> dict[str, float]:
    """Seconds per iteration of each mode. Every mode is built and run once untimed (kernel
    selection, allocator pools), then the modes take turns, one timed iteration each per round,
    so a drift of the machine's speed (another process, clocks) touches them all alike; up to 5
    rounds while the budget lasts (at least one). A mode clearly slower than the best (SLOWER) is
    dropped from later rounds. Returns each mode's fastest iteration."""
    t_start = time.perf_counter()
    steps: dict[str, Callable[[], None]] = {}
    for amp, cl in modes:
        steps[mode_label(amp, cl)] = make_step(amp, cl)
        steps[mode_label(amp, cl)]()
        sync()
    times: dict[str, list[float]] = {label: [] for label in steps}
    active = list(steps)
    for _ in range(5):
        for label in active:
            t0 = time.perf_counter()
            steps[label]()
            sync()
            times[label].append(time.perf_counter() - t0)
        best = min(min(v) for v in times.values() if v)
        active = [label for label in active if min(times[label]) <= SLOWER * best]
        if time.perf_counter() - t_start + sum(min(times[label]) for label in active) > budget_s:
            break
    steps.clear()
    return {label: min(v) for label, v in times.items()}


def choose(amp: str, channels_last: str | bool, device: torch.device, workload: dict,
           make_step: Callable[[str, bool], Callable[[], None]], log: Callable[[str], None] = print) -> Precision:
    """The mode for `train.amp` / `train.channels_last` as given: explicit values as they are,
    `auto` from the cache or, on a miss, from a probe whose result is then cached."""
    if amp != "auto" and channels_last != "auto":
        if amp == "bf16" and device.type == "cpu" and not native_cpu_bf16():
            warn_emulated_bf16()
        return Precision(amp, bool(channels_last))
    modes = candidates(amp, channels_last, device)
    if len(modes) == 1:
        return Precision(*modes[0], source="explicit")
    signature = device_signature(device)
    key = cache_key(signature, workload, modes)
    hit = cached(key)
    if hit is not None:
        return hit
    budget = probe_budget()
    log(f"precision: timing {len(modes)} modes of the training step on {signature.split(' torch ')[0]} "
        f"(once per device, architecture and batch; cached in {cache_path()})")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seconds = measure(modes, make_step, sync, budget)
    fastest = min(seconds, key=seconds.get)
    a, cl = next((a, cl) for a, cl in modes if mode_label(a, cl) == fastest)
    choice = Precision(a, cl, "probe", seconds, time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    remember(key, choice, signature, workload)
    return choice


_warned = False


def warn_emulated_bf16() -> None:
    """Once per process: explicit bf16 on a CPU that emulates it (auto never tries it there)."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(f"train.amp=bf16 on a CPU without native bf16 ({cpu_description()}): autocast emulates it, "
                  "about 20x slower than fp32 on AVX2 EPYCs (20-32x in docs/benchmarks.md); use train.amp: auto "
                  "or none", stacklevel=3)


def as_workload(params, batch: int) -> dict:
    """What the step's cost depends on besides the device: the architecture, the phases an
    iteration runs, the image size and the per-worker batch."""
    g = params.gan
    return {"model": params.model.model_dump(mode="json"), "image_size": params.data.image_size,
            "batch": batch, "objective": g.objective, "adversarial": g.adv_weight > 0,
            "gp": g.gp_weight > 0, "r1": g.r1_gamma > 0}


# ---- inference ----------------------------------------------------------------------------------

class InferenceGenerator(torch.nn.Module):
    """A generator that runs in a chosen precision and layout and returns fp32 ab. Train/eval
    and dropout switches reach the wrapped generator (it is a submodule)."""

    def __init__(self, G: torch.nn.Module, precision: Precision):
        super().__init__()
        self.precision = precision
        self.memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
        self.G = G.to(memory_format=self.memory_format)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        L = L.contiguous(memory_format=self.memory_format)
        if self.precision.amp == "none":
            return self.G(L).float()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.precision.amp]
        with torch.autocast(L.device.type, dtype=dtype):
            return self.G(L).float()


def for_inference(G: torch.nn.Module, image_size: int, batch: int, device: torch.device | str = "cpu",
                  log: Callable[[str], None] = print) -> InferenceGenerator:
    """G in the fastest mode for colorizing `batch` images at `image_size` on `device` (the same
    measurement and cache as training's `auto`, timing the generator's forward pass alone)."""
    device = torch.device(device)
    was_training = G.training
    G.eval()

    def make_step(amp: str, channels_last: bool):
        model = InferenceGenerator(G, Precision(amp, channels_last))
        x = torch.linspace(-1, 1, batch * image_size * image_size, device=device).view(batch, 1, image_size, image_size)

        def step():
            with torch.no_grad():
                model(x)
        return step

    workload = {"inference": type(G).__name__, "parameters": sum(p.numel() for p in G.parameters()),
                "image_size": image_size, "batch": batch}
    choice = choose("auto", "auto", device, workload, make_step, log=lambda m: None)
    G.train(was_training)
    return InferenceGenerator(G, choice)
