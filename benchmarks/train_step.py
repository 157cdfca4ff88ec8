"""Training-step throughput per precision mode, what `auto` chooses, and the share of the machine's peak.

    python benchmarks/train_step.py [--iters 4] [--device cpu] [--archs default,demo]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_step.py   # as an AVX2-only CPU

For each architecture (the built-in default: pix2pix U-Net down to 1x1 + 70x70 PatchGAN; demo:
the same at half width, params.yaml's embedded default) at 64 px, batch 32, one process:
- every mode side by side (fp32 / bf16 / fp16-on-CUDA x contiguous / channels_last), each in a
  fresh subprocess, img/s and achieved FLOP/s as a share of the machine's own peak (a large
  fp32 matmul, and a bf16 one where the device has native bf16);
- "pix2pix eager fp32": the same networks driven by a plain transcription of pix2pix's
  optimize_parameters (junyanz/pytorch-CycleGAN-and-pix2pix), torch's default Adam: the reference;
- `auto` as a user gets it on a machine seen for the first time (an empty cache): the probe's
  cost in seconds, the mode it chose, that mode's img/s, and its ratio to the fastest mode
  measured in the same run (target >= 0.95).
Modes `auto` does not consider on this device (bf16 where it is emulated) are still measured,
with fewer iterations, so the table shows why.
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


def run_one(arch: str, size: int, batch: int, mode: str, iters: int, device: str) -> dict:
    """One configuration in this process. mode: 'pix2pix', 'auto', or 'amp/layout'."""
    from torch.utils.flop_counter import FlopCounterMode

    from colorray.config import parse_params
    from colorray.precision import FP32, Precision
    from colorray.train.step import GANTrainer

    raw = {**ARCHS[arch], "data": {"image_size": size}, "train": {"batch_size": batch}}
    g = torch.Generator().manual_seed(0)
    L = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
    ab = (torch.rand(batch, 2, size, size, generator=g) * 0.6 - 0.3).to(device)
    probe_s, chosen = 0.0, None
    if mode == "pix2pix":  # pix2pix's own optimizers: torch's default Adam, fp32, contiguous
        trainer = GANTrainer(parse_params(raw), device, precision=FP32)
        opt_g = torch.optim.Adam(trainer.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(trainer.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        step = lambda: pix2pix_reference(trainer.G, trainer.D, opt_g, opt_d, L, ab)  # noqa: E731
    else:
        if mode == "auto":  # a machine seen for the first time: an empty cache
            os.environ["COLORRAY_CACHE_DIR"] = tempfile.mkdtemp(prefix="colorray-bench-cache-")
            t0 = time.perf_counter()
            trainer = GANTrainer(parse_params(raw), device, log=lambda m: None)
            probe_s = time.perf_counter() - t0
            chosen = trainer.precision.label
        else:
            amp, layout = mode.split("/")
            trainer = GANTrainer(parse_params(raw), device,
                                 precision=Precision("none" if amp == "fp32" else amp, layout == "channels_last"))
        step = lambda: trainer.train_iteration([(L, ab)] * trainer.batches_needed())  # noqa: E731
    # FLOPs of one iteration, counted on the eager fp32 path (the same arithmetic in any mode).
    eager = GANTrainer(parse_params(raw), device, precision=FP32)
    with FlopCounterMode(display=False) as counter:
        eager.train_iteration([(L, ab)] * eager.batches_needed())
    flops = counter.get_total_flops()
    del eager
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    step()  # warm-up
    sync()
    warm = time.perf_counter() - t0
    n = iters if warm < 10 else 1  # an emulated mode: one timed iteration is enough to show it
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]  # the median iteration
    return {"s_per_iter": dt, "img_per_s": batch / dt, "flops": flops, "achieved": flops / dt,
            "probe_s": probe_s, "chosen": chosen, "timed": n,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "threads": torch.get_num_threads()}


def modes(device: str) -> list[str]:
    amps = ["fp32", "bf16"] + (["fp16"] if device.startswith("cuda") else [])
    return [f"{a}/{layout}" for a in amps for layout in ("contiguous", "channels_last")]


def _sub(args, *one) -> dict:
    out = subprocess.run([sys.executable, __file__, "--iters", str(args.iters), "--device", args.device,
                          "--one", json.dumps(one)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--archs", default="default,demo")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one), args.iters, args.device)))
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
    print("\n| arch | mode | img/s | s/iter | GFLOP/s | share of peak | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for arch in args.archs.split(","):
        rows = {}
        for mode in ["pix2pix"] + modes(args.device) + ["auto"]:
            r = rows[mode] = _sub(args, arch, args.size, args.batch, mode)
            amp = "fp32" if mode in ("pix2pix", "auto") else mode.split("/")[0]
            if mode == "auto":
                amp = r["chosen"].split("/")[0]
            peak = peaks.get(amp)
            share = f"{100 * r['achieved'] / peak:.1f}%" if peak else "n/a"
            name = {"pix2pix": "pix2pix eager fp32 (reference)",
                    "auto": f"auto -> {r['chosen']} (probe {r['probe_s']:.1f} s)"}.get(mode, mode)
            timed = f" ({r['timed']} timed)" if r["timed"] < args.iters else ""
            print(f"| {arch} | {name} | {r['img_per_s']:.1f}{timed} | {r['s_per_iter']:.3f} | "
                  f"{r['achieved'] / 1e9:.0f} | {share} | {r['peak_rss_gib']:.2f} GiB |", flush=True)
        fastest = max(modes(args.device), key=lambda m: rows[m]["img_per_s"])
        auto = rows["auto"]
        summary.append(f"{arch} ({args.size} px, batch {args.batch}, {auto['flops'] / args.batch / 1e9:.2f} GFLOP/img): "
                       f"auto chose {auto['chosen']} in a {auto['probe_s']:.1f} s probe (trainer construction "
                       f"included): {auto['img_per_s']:.1f} img/s; fastest mode measured: {fastest} "
                       f"{rows[fastest]['img_per_s']:.1f} img/s; auto / fastest = "
                       f"{auto['img_per_s'] / rows[fastest]['img_per_s']:.2f}; fastest / pix2pix reference = "
                       f"{rows[fastest]['img_per_s'] / rows['pix2pix']['img_per_s']:.2f}x")
    print(f"\n{auto['threads']} torch threads, {args.iters} timed iterations each (median)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
