"""One GAN training iteration, in one process, on any device: `GANTrainer`.

An iteration is `n_critic` discriminator steps (one batch each) followed by one generator
step on the last batch, whose generator output the last D step also used (pix2pix order).
During the reconstruction-only phases (`gan.pretrain_iters`, or `gan.adv_weight = 0`) an
iteration is one generator step on one batch and D is not trained.

Phases, as stylegan2-ada names them: D main (objective.d_loss), D reg (gradient penalty, R1
with its lazy interval), G main (adversarial + reconstruction). Instance smoothing and
instance noise perturb D's ab inputs in exactly one place, `_d_input`.
Penalties run in fp32 outside autocast, so fp16 loss scaling never touches their inner
gradients. Metric names are the same everywhere they appear: loss/d, loss/d/gp, loss/d/r1,
loss/g/adv, loss/g/l1, loss/g/l2, loss/g/huber, d/real, d/fake, lr/g, lr/d.

An iteration never waits for the device: its losses come back as tensors on the device, and the
caller reads them (`metric_values`) only when it reports. The precision and memory layout are
`train.amp` / `train.channels_last`; `auto` is resolved by measurement (colorray.precision).
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from colorray.atomic import torch_save_atomic
from colorray.config import Params, parse_params
from colorray.gan.objectives import build_objective
from colorray.gan.penalties import (add_instance_noise, gradient_penalty, instance_smoothing,
                                    linear_decay, r1_penalty)
from colorray.models import build_discriminator, build_generator
from colorray.models.files import CHECKPOINT_FORMAT
from colorray.precision import Precision, as_workload, choose
from colorray.train.schedules import lr_factor

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _optimizer(name: str, params, lr: float, betas):
    # Fused kernels (CPU and CUDA): one pass over the parameters instead of one op per tensor;
    # 4.7x faster than the default Adam on 32M CPU parameters (benchmarks/train_step.py).
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=True)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)


def allreduce_mean_grads(module: torch.nn.Module) -> None:
    """Average the gradients of `module` over all processes: one flattened all-reduce per
    optimizer step, after the whole backward (penalties' double backward included), as
    stylegan2-ada does instead of DDP (whose reducer sees only its own forward's backward)."""
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone(memory_format=torch.preserve_format)
        offset += n


class GANTrainer:
    """`rank` / `world_size`: this process's place in data-parallel training. Each process
    passes its own slice of the global batch; gradients are averaged across processes, and
    per-image random draws (GP interpolation, instance smoothing) come from the global batch's
    draw, so N processes with B/N images equal one process with B (no BatchNorm, no dropout)."""

    def __init__(self, params: Params, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1, precision: Precision | None = None, log: Callable[[str], None] = print):
        """precision: the mode to run in; None resolves train.amp / train.channels_last (`auto`
        by measurement, rank 0's choice for every rank)."""
        self.params, self.device = params, torch.device(device)
        self.rank, self.world_size = rank, world_size
        t, g = params.train, params.gan
        if precision is None:
            precision = resolve_precision(params, self.device, t.batch_size // world_size, rank, world_size, log)
        self.precision = precision
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        torch.manual_seed(t.seed)  # weights depend on the seed only
        self.G = build_generator(params).to(self.device)
        self.adversarial = g.adv_weight > 0
        self.D = build_discriminator(params).to(self.device) if self.adversarial else None
        if t.sync_batchnorm and world_size > 1:  # statistics over the global batch (GPU only)
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            if self.D is not None:
                self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
        for net in (self.G, self.D):
            if net is not None:
                net.to(memory_format=self.memory_format)
        # Compiled forwards for the main phases; the penalties' double backward runs through
        # the eager D, which torch.compile does not support. Checkpoints hold the eager modules.
        compile_ = torch.compile if t.compile else (lambda m: m)
        self.G_fwd = compile_(self.G)
        self.D_fwd = compile_(self.D) if self.adversarial else None
        self.objective = build_objective(g)
        self.opt_g = _optimizer(t.optimizer, self.G.parameters(), t.lr_g, t.betas_g)
        schedule = lambda it: lr_factor(t.lr_schedule, it, t.iters, t.lr_decay_start)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        if self.adversarial:
            self.opt_d = _optimizer(t.optimizer, self.D.parameters(), t.lr_d, t.betas_d)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule)
        self.amp_dtype = AMP_DTYPES.get(precision.amp)
        fp16 = precision.amp == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.comm_seconds = 0.0  # time spent averaging gradients (benchmarks/train_scaling.py)
        self.iter = 0  # generator steps done
        self.d_steps = 0
        self.data_position = {"epoch": 0, "batch": 0}  # where the training stream stands

    # ---- phases ---------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def in_adversarial_phase(self) -> bool:
        return self.adversarial and self.iter >= self.params.gan.pretrain_iters

    def batches_needed(self) -> int:
        """Batches the next iteration consumes: n_critic when adversarial, else 1."""
        return self.params.gan.n_critic if self.in_adversarial_phase() else 1

    def _per_image_uniform(self, n: int, stream: int) -> torch.Tensor:
        """U[0, 1) per image of this process's slice of the global batch, (n, 1, 1, 1): the same
        numbers whatever the number of processes, and a function of the step alone."""
        seed = (self.params.train.seed * 1_000_003 + self.d_steps * 7_919 + stream) % 2**63
        u = torch.rand(self.world_size * n, generator=torch.Generator().manual_seed(seed))
        u = u[self.rank * n:(self.rank + 1) * n].view(n, 1, 1, 1)
        if self.device.type == "cuda":  # pinned, so the copy does not wait for the GPU
            return u.pin_memory().to(self.device, non_blocking=True)
        return u.to(self.device)

    def _optimize(self, loss, net, opt, scaler) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.world_size > 1:
            t0 = time.perf_counter()
            allreduce_mean_grads(net)
            self.comm_seconds += time.perf_counter() - t0
        scaler.step(opt)
        scaler.update()

    def _d_input(self, L, ab):
        """The one place where D's inputs are built and perturbed (instance noise)."""
        g = self.params.gan
        sigma = linear_decay(g.instance_noise, g.instance_noise_iters, self.iter)
        x = torch.cat((L, add_instance_noise(ab, sigma)), 1)
        return x.contiguous(memory_format=self.memory_format)

    def _d_step(self, L, real_ab, fake_ab) -> dict:
        g = self.params.gan
        beta = linear_decay(g.instance_smoothing, g.instance_smoothing_iters, self.iter)
        real_ab, fake_ab = instance_smoothing(real_ab, fake_ab.detach(), beta,
                                              self._per_image_uniform(len(L), stream=1))
        real_in, fake_in = self._d_input(L, real_ab), self._d_input(L, fake_ab)
        with self._autocast():
            d_real, d_fake = self.D_fwd(real_in), self.D_fwd(fake_in)
            loss = self.objective.d_loss(d_real.float(), d_fake.float())
        metrics = {"loss/d": loss.detach(), "d/real": d_real.detach().float().mean(),
                   "d/fake": d_fake.detach().float().mean()}
        if g.gp_weight > 0:
            # study 001 penalises at the smoothed fake x_F itself; WGAN-GP at random interpolates
            alpha = (torch.zeros(len(L), 1, 1, 1, device=L.device) if g.gp_target == "smoothed_fake"
                     else self._per_image_uniform(len(L), stream=2))
            gp = gradient_penalty(self.D, real_in, fake_in, alpha)
            loss = loss + g.gp_weight * gp
            metrics["loss/d/gp"] = gp.detach()
        if g.r1_gamma > 0 and self.d_steps % g.r1_interval == 0:
            r1 = r1_penalty(self.D, real_in)
            loss = loss + (g.r1_gamma / 2) * g.r1_interval * r1  # lazy: scaled by the interval
            metrics["loss/d/r1"] = r1.detach()
        self._optimize(loss, self.D, self.opt_d, self.scaler_d)
        self.objective.after_d_step(self.D)
        self.d_steps += 1
        return metrics

    def _g_step(self, L, real_ab, fake_ab) -> dict:
        g = self.params.gan
        metrics, loss = {}, 0.0
        with self._autocast():
            if self.in_adversarial_phase():
                self.D.requires_grad_(False)  # G's step needs D's input gradients, not D's
                adv = self.objective.g_loss(self.D_fwd(self._d_input(L, fake_ab)).float())
                self.D.requires_grad_(True)
                loss = loss + g.adv_weight * adv
                metrics["loss/g/adv"] = adv.detach()
            fake, real = fake_ab.float(), real_ab.float()
            for name, weight, fn in (("l1", g.l1_weight, F.l1_loss), ("l2", g.l2_weight, F.mse_loss),
                                     ("huber", g.huber_weight, F.smooth_l1_loss)):
                if weight > 0:
                    term = fn(fake, real)
                    loss = loss + weight * term
                    metrics[f"loss/g/{name}"] = term.detach()
        self._optimize(loss, self.G, self.opt_g, self.scaler_g)
        return metrics

    def train_iteration(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """One iteration on `batches_needed()` batches of normalised (L, ab) on the device.
        Returns the metrics as 0-d tensors on the device (learning rates as floats): reading
        them waits for the device, so callers do it only when they report (`metric_values`)."""
        if len(batches) != self.batches_needed():
            raise ValueError(f"iteration {self.iter} needs {self.batches_needed()} batches, got {len(batches)}")
        self.G.train()
        metrics = {}
        L = ab = fake = None
        for i, (L, ab) in enumerate(batches):
            L = L.contiguous(memory_format=self.memory_format)
            last = i == len(batches) - 1
            with self._autocast(), (contextlib.nullcontext() if last else torch.no_grad()):
                fake = self.G_fwd(L)
            if self.in_adversarial_phase():
                metrics.update(self._d_step(L, ab, fake))
        metrics.update(self._g_step(L, ab, fake))
        metrics["lr/g"] = self.opt_g.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # Schedules follow the generator iteration, also while D rests (pretraining) or
            # fp16 skipped a step; torch warns about that order, which is intended here.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.sched_g.step()
            if self.adversarial:
                metrics["lr/d"] = self.opt_d.param_groups[0]["lr"]
                self.sched_d.step()
        self.iter += 1
        return metrics

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A self-describing checkpoint: loadable with torch.load(weights_only=True)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "iter": self.iter, "d_steps": self.d_steps, "data_position": dict(self.data_position),
            "G": self.G.state_dict(), "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(), "scaler_g": self.scaler_g.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        if self.adversarial:
            state.update({"D": self.D.state_dict(), "opt_d": self.opt_d.state_dict(),
                          "sched_d": self.sched_d.state_dict(), "scaler_d": self.scaler_d.state_dict()})
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a colorray checkpoint (format {state.get('format')!r})")
        self.G.load_state_dict(state["G"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        if self.adversarial:
            self.D.load_state_dict(state["D"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.iter, self.d_steps = state["iter"], state["d_steps"]
        self.data_position = dict(state["data_position"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save(self, path: str | Path) -> None:
        torch_save_atomic(self.state_dict(), path)


def metric_values(metrics: dict) -> dict[str, float]:
    """The floats of `train_iteration`'s metrics: one copy from the device (one wait), at report time."""
    values = {k: float(v) for k, v in metrics.items() if not torch.is_tensor(v)}
    on_device = [k for k, v in metrics.items() if torch.is_tensor(v)]
    if on_device:
        stacked = torch.stack([metrics[k].detach().to(torch.float64) for k in on_device])
        values.update(zip(on_device, stacked.cpu().tolist()))
    return dict(sorted(values.items()))


def resolve_precision(params: Params, device: torch.device, batch: int, rank: int = 0, world_size: int = 1,
                      log: Callable[[str], None] = print) -> Precision:
    """train.amp / train.channels_last for this run. Rank 0 decides (for `auto`: from the cache
    or by timing the real step at this per-worker batch, colorray.precision) and every
    rank receives its choice, so all workers of a run compute in one mode."""
    choice = None
    if rank == 0:
        size = params.data.image_size

        def make_step(amp: str, channels_last: bool):
            # The configured step in one mode, on random data, in its adversarial phase, with one
            # critic step per generator step (the same kernels; n_critic only repeats them);
            # eager (a torch.compile per mode would cost more than the probe's whole budget).
            raw = params.model_dump(mode="json")
            raw["train"].update(amp=amp, channels_last=channels_last, compile=False)
            raw["gan"]["n_critic"] = 1
            trainer = GANTrainer(parse_params(raw, origin="the precision probe"), device,
                                 precision=Precision(amp, channels_last))
            trainer.iter = params.gan.pretrain_iters
            g = torch.Generator().manual_seed(0)
            L = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
            ab = (torch.rand(batch, 2, size, size, generator=g) * 0.6 - 0.3).to(device)
            batches = [(L, ab)] * trainer.batches_needed()
            return lambda: trainer.train_iteration(batches)

        t = params.train
        choice = choose(t.amp, t.channels_last, device, as_workload(params, batch), make_step, log)
        if choice.source != "explicit":
            log(f"[colorray] {choice.summary()}")
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [choice]
        torch.distributed.broadcast_object_list(box, src=0)
        choice = box[0]
    return choice


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's state (tensors only: weights_only=True), checked to be colorray's. A file
    that does not load (truncated, corrupt, not torch's) is a ValueError naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # RuntimeError, UnpicklingError, EOFError...: the file, not the code
        raise ValueError(f"{path}: not a readable colorray checkpoint ({type(e).__name__}: {e}); "
                         "delete it, or train afresh (train.resume: false / --fresh)") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a colorray checkpoint")
    return state


def checkpoint_params(path: str | Path) -> Params:
    """The parameters a checkpoint was trained with, without building its trainer."""
    return parse_params(read_checkpoint(path)["params"], origin=f"{path} (params)")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", precision: Precision | None = None,
                    log: Callable[[str], None] = print) -> GANTrainer:
    """Rebuild a trainer (nets, optimizers, schedules, step, RNG) from a checkpoint file.
    precision: as for GANTrainer (FP32 for a trainer that only reads or re-saves weights)."""
    state = read_checkpoint(path, device)
    trainer = GANTrainer(parse_params(state["params"], origin=f"{path} (params)"), device,
                         precision=precision, log=log)
    trainer.load_state_dict(state)
    return trainer
