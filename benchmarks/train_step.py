"""Training-step throughput per precision mode, what `auto` chooses, and the share of the machine's peak.

    python benchmarks/train_step.py [--iters 10] [--device cpu] [--archs default,demo]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_step.py   # as an AVX2-only CPU

For each architecture (the built-in default: pix2pix U-Net down to 1x1 + 70x70 PatchGAN; demo:
the same at half width, params.yaml's embedded default) at 64 px, batch 32, in a process of its own:
- `auto` as a user gets it on a machine seen for the first time (an empty cache): the probe's
  cost in seconds (trainer construction included) and the mode it chose;
- every mode (fp32 / bf16 / fp16-on-CUDA x contiguous / channels_last) and "pix2pix eager
  fp32" (the same networks driven by a plain transcription of pix2pix's optimize_parameters,
  junyanz/pytorch-CycleGAN-and-pix2pix, with torch's default Adam: the reference) side by side,
  taking turns one iteration each per round, so a drift of the machine's speed touches them all
  alike; img/s and achieved FLOP/s as a share of the machine's own peak (a large fp32 matmul,
  and a bf16 one where the device has native bf16);
- auto's choice against the fastest mode of the same rounds (target: >= 0.95).
Modes `auto` does not consider on this device (bf16 where it is emulated) are still measured,
once, so the table shows why.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ARCHS = {"default": {"preset": None}, "demo": {"preset": "demo"}}
WARMUP = 3  # untimed iterations before the timed ones (one only for a mode slower than 10 s)


def pix2pix_reference(G, D, opt_g, opt_d, L, ab, lambda_l1=100.0):
    """pix2pix's Pix2PixModel.optimize_parameters with vanilla GANLoss, written out."""
    fake = G(L)
    for p in D.parameters():
        p.requires_grad = True
    opt_d.zero_grad()
    pred_fake = D(torch.cat((L, fake.detach()), 1))
    pred_real = D(torch.cat((L, ab), 1))
    loss_d = 0.5 * (F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
                    + F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real)))
    loss_d.backward()
    opt_d.step()
    for p in D.parameters():
        p.requires_grad = False
    opt_g.zero_grad()
    pred_fake = D(torch.cat((L, fake), 1))
    loss_g = F.binary_cross_entropy_with_logits(pred_fake, torch.ones_like(pred_fake)) + lambda_l1 * F.l1_loss(fake, ab)
    loss_g.backward()
    opt_g.step()


def peak_flops(device: str, dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matmul: the ceiling the step's convolutions can approach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def run_arch(arch: str, size: int, batch: int, iters: int, device: str) -> dict:
    """One architecture, in this process: `auto` from an empty cache (the probe's cost and
    choice), then every mode and the pix2pix reference side by side, taking turns one iteration
    each per round (WARMUP untimed rounds, then `iters` timed), so the machine's drift touches
    them all alike. A mode slower than 10 s an iteration (emulated bf16) is timed once."""
    from torch.utils.flop_counter import FlopCounterMode

    from colorray.config import parse_params
    from colorray.precision import FP32, Precision
    from colorray.train.step import GANTrainer

    params = parse_params({**ARCHS[arch], "data": {"image_size": size}, "train": {"batch_size": batch}})
    os.environ["COLORRAY_CACHE_DIR"] = tempfile.mkdtemp(prefix="colorray-bench-cache-")  # a new machine
    t0 = time.perf_counter()
    auto = GANTrainer(params, device, log=lambda m: None)
    probe_s, chosen = time.perf_counter() - t0, auto.precision
    del auto
    g = torch.Generator().manual_seed(0)
    L = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
    ab = (torch.rand(batch, 2, size, size, generator=g) * 0.6 - 0.3).to(device)
    steps = {}
    ref = GANTrainer(params, device, precision=FP32)  # pix2pix's own optimizers: default Adam, fp32
    opt_g = torch.optim.Adam(ref.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(ref.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    steps["pix2pix"] = lambda: pix2pix_reference(ref.G, ref.D, opt_g, opt_d, L, ab)  # noqa: E731
    trainers = {}
    for mode in modes(device):
        amp, layout = mode.split("/")
        trainers[mode] = GANTrainer(params, device, precision=Precision(
            "none" if amp == "fp32" else amp, layout == "channels_last"))
        steps[mode] = (lambda t: lambda: t.train_iteration([(L, ab)] * t.batches_needed()))(trainers[mode])
    # FLOPs of one iteration, counted on the eager fp32 path (the same arithmetic in any mode).
    with FlopCounterMode(display=False) as counter:
        trainers["fp32/contiguous"].train_iteration([(L, ab)])
    flops = counter.get_total_flops()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {m: [] for m in steps}
    for r in range(WARMUP + iters):
        for m, step in steps.items():
            if times[m] and times[m][-1] > 10:
                continue  # emulated: its one timed iteration says enough
            t0 = time.perf_counter()
            step()
            sync()
            dt = time.perf_counter() - t0
            if r >= WARMUP or dt > 10:  # a mode slower than 10 s is warmed up once, then timed once
                times[m].append(dt)
    rows = {}
    for m, ts in times.items():
        dt = sorted(ts)[len(ts) // 2]  # the median iteration
        rows[m] = {"s_per_iter": dt, "img_per_s": batch / dt, "achieved": flops / dt, "timed": len(ts)}
    return {"rows": rows, "flops": flops, "probe_s": probe_s, "chosen": chosen.label,
            "probe_seconds": chosen.seconds, "threads": torch.get_num_threads(),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def modes(device: str) -> list[str]:
    amps = ["fp32", "bf16"] + (["fp16"] if device.startswith("cuda") else [])
    return [f"{a}/{layout}" for a in amps for layout in ("contiguous", "channels_last")]


def _sub(args, arch: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--iters", str(args.iters), "--device", args.device,
                          "--one", json.dumps([arch, args.size, args.batch])], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--archs", default="default,demo")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one architecture as JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_arch(*json.loads(args.one), args.iters, args.device)))
        return

    from colorray.precision import cpu_description, device_signature, native_cpu_bf16

    dev = torch.device(args.device)
    native_bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else native_cpu_bf16()
    peaks = {"fp32": peak_flops(args.device, torch.float32)}
    if native_bf16:
        peaks["bf16"] = peak_flops(args.device, torch.bfloat16)
    if dev.type == "cuda":
        peaks["fp16"] = peak_flops(args.device, torch.float16)
    print(f"device: {device_signature(dev) if dev.type == 'cuda' else cpu_description()}")
    print("peak (2048^3 matmul): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
          + ("" if native_bf16 else "; bf16: no native support (emulated), no peak"), flush=True)
    print("\n| arch | mode | img/s | s/iter | GFLOP/s | share of its peak |")
    print("|---|---|---|---|---|---|")
    summary = []
    for arch in args.archs.split(","):
        r = _sub(args, arch)
        for mode, row in r["rows"].items():
            amp = "fp32" if mode == "pix2pix" else mode.split("/")[0]
            share = f"{100 * row['achieved'] / peaks[amp]:.1f}%" if amp in peaks else "n/a (emulated)"
            name = {"pix2pix": "pix2pix eager fp32 (reference)"}.get(mode, mode)
            if mode == r["chosen"]:
                name = f"**{name} (auto's choice)**"
            timed = f" ({row['timed']} timed)" if row["timed"] < args.iters else ""
            print(f"| {arch} | {name} | {row['img_per_s']:.1f}{timed} | {row['s_per_iter']:.3f} | "
                  f"{row['achieved'] / 1e9:.0f} | {share} |", flush=True)
        own = {m: row for m, row in r["rows"].items() if m != "pix2pix"}
        fastest = max(own, key=lambda m: own[m]["img_per_s"])
        auto = own[r["chosen"]]
        probe = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["probe_seconds"].items(), key=lambda kv: kv[1]))
        summary.append(f"{arch} ({args.size} px, batch {args.batch}, {r['flops'] / args.batch / 1e9:.2f} GFLOP/img, "
                       f"peak RSS {r['peak_rss_gib']:.2f} GiB): auto chose {r['chosen']} in a {r['probe_s']:.1f} s probe "
                       f"(trainer construction included; s/iter: {probe}) -> {auto['img_per_s']:.1f} img/s; "
                       f"fastest mode measured: {fastest} {own[fastest]['img_per_s']:.1f} img/s; "
                       f"auto / fastest = {auto['img_per_s'] / own[fastest]['img_per_s']:.2f}; "
                       f"fastest / pix2pix reference = {own[fastest]['img_per_s'] / r['rows']['pix2pix']['img_per_s']:.2f}x")
    print(f"\n{r['threads']} torch threads; {WARMUP} untimed + {args.iters} timed rounds, the modes taking turns "
          "(median iteration)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
