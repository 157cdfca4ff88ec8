"""Training-step throughput: img/s, peak RSS, FLOPs per image and achieved FLOP/s.

    python benchmarks/train_step.py [--iters 6] [--device cpu]

One iteration = n_critic discriminator steps + one generator step (cGAN: n_critic = 1), on
random (L, ab) batches at the default architecture (pix2pix U-Net down to 1x1, 70x70
PatchGAN). Each configuration runs in a fresh subprocess so its peak RSS is its own.
"pix2pix eager fp32" is the reference: the same networks driven by a plain transcription
of pix2pix's optimize_parameters (junyanz/pytorch-CycleGAN-and-pix2pix), fp32, no autocast.
Target (issue 3): the default 64-px cGAN step >= 3x that reference's throughput.
The default is bf16 autocast + channels_last + fused Adam (params.yaml train section).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

FP32 = {"amp": "none", "channels_last": False}
CONFIGS = [  # (name, image size, batch, train overrides)
    ("pix2pix eager fp32 (reference)", 64, 32, None),
    ("colorray fp32", 64, 32, FP32),
    ("colorray bf16", 64, 32, {"amp": "bf16", "channels_last": False}),
    ("colorray default (bf16 + channels_last)", 64, 32, {}),
    ("colorray default + torch.compile", 64, 32, {"compile": True}),
    ("pix2pix eager fp32 (reference)", 256, 4, None),
    ("colorray fp32", 256, 4, FP32),
    ("colorray default (bf16 + channels_last)", 256, 4, {}),
]


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


def run_one(size: int, batch: int, train: dict | None, iters: int, device: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from colorray.config import parse_params
    from colorray.train.step import GANTrainer

    params = parse_params({"data": {"image_size": size}, "train": {"batch_size": batch, **(train or {})}})
    trainer = GANTrainer(params, device)
    g = torch.Generator().manual_seed(0)
    L = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
    ab = (torch.rand(batch, 2, size, size, generator=g) * 0.6 - 0.3).to(device)
    if train is None:  # pix2pix's own optimizers: torch's default Adam, fp32, contiguous
        trainer = GANTrainer(parse_params({"data": {"image_size": size}, "train": {"batch_size": batch, **FP32}}), device)
        opt_g = torch.optim.Adam(trainer.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(trainer.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        step = lambda: pix2pix_reference(trainer.G, trainer.D, opt_g, opt_d, L, ab)  # noqa: E731
    else:
        step = lambda: trainer.train_iteration([(L, ab)] * trainer.batches_needed())  # noqa: E731
    # FLOPs of one iteration, counted on the eager fp32 path (the same arithmetic in any mode).
    eager = GANTrainer(parse_params({"data": {"image_size": size}, "train": {"batch_size": batch, **FP32}}), device)
    with FlopCounterMode(display=False) as counter:
        eager.train_iteration([(L, ab)] * eager.batches_needed())
    flops = counter.get_total_flops()
    del eager
    step()  # warm-up (and compilation)
    step()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    dt = (time.perf_counter() - t0) / iters
    images = batch * params.gan.n_critic
    return {"size": size, "batch": batch, "s_per_iter": dt, "img_per_s": images / dt,
            "gflop_per_image": flops / images / 1e9, "achieved_tflops": flops / dt / 1e12,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = ap.parse_args(argv)
    if args.one:
        size, batch, train = json.loads(args.one)
        print(json.dumps(run_one(size, batch, train, args.iters, args.device)))
        return
    rows = []
    for name, size, batch, train in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--iters", str(args.iters), "--device", args.device,
                              "--one", json.dumps([size, batch, train])], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((name, r))
        print(f"{name:32s} {size:3d}px b{batch:<3d} {r['img_per_s']:8.1f} img/s  "
              f"{r['peak_rss_gib']:.2f} GiB  {r['gflop_per_image']:.2f} GFLOP/img  "
              f"{r['achieved_tflops'] * 1000:.0f} GFLOP/s", flush=True)
    print(f"\ndevice {args.device}, {rows[0][1]['threads']} torch threads, {args.iters} timed iterations each\n")
    print("| configuration | image | batch | img/s | s/iter | peak RSS | GFLOP/image | achieved GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['size']} | {r['batch']} | {r['img_per_s']:.1f} | {r['s_per_iter']:.3f} | "
              f"{r['peak_rss_gib']:.2f} GiB | {r['gflop_per_image']:.2f} | {r['achieved_tflops'] * 1000:.0f} |")
    for size in (64, 256):
        ref = next(r for n, r in rows if r["size"] == size and n.startswith("pix2pix"))
        best = max((r for n, r in rows if r["size"] == size and not n.startswith("pix2pix")),
                   key=lambda r: r["img_per_s"])
        print(f"{size} px: best colorray / pix2pix eager fp32 = {best['img_per_s'] / ref['img_per_s']:.2f}x")


if __name__ == "__main__":
    main()
