"""Named configurations reproducing the five colorization studies colorray compares (000-004).

Plain data, at the bottom of the package: colorray.config reads it, nothing here imports
from colorray. A preset sets keys of the `model`, `gan` and `train` sections; any non-null value in
params.yaml overrides it (`dvc exp run -S preset=000-wgan -S train.batch_size=64`). Its `data`
entry is the dataset the study used, printed by `colorray presets` and listed in the README,
not applied: the same recipe can be tried on any data. Iteration budgets are the studies'
epochs times their training-set size over the batch size. Where a report is silent the
preset follows its cited reference (pix2pix, WGAN, WGAN-GP, Mescheder et al.), as noted.
"""

from __future__ import annotations

# PatchGAN layer tables (colorray.models.discriminators): (out channels, stride, padding) with
# 4x4 kernels; a final 4x4 conv to 1 channel, stride 1, padding 1, follows. pix2pix's
# n_layers=3 default (70x70 at 256 px), also what `model.d_layers: null` means:
PIX2PIX_LAYERS = ((64, 2, 1), (128, 2, 1), (256, 2, 1), (512, 1, 1))
# Study 000's 46x46 PatchGAN for 64x64 images (9x9 output):
STUDY000_LAYERS = ((64, 2, 1), (128, 2, 1), (256, 1, 0), (512, 1, 0))

_S000 = {"g_in_channels": 3, "g_depth": 5, "d_layers": STUDY000_LAYERS}  # 64 px, 2x2 bottleneck

# Study 001: U-Net with instance norm, learned-affine instance norm on the skips, maxpool
# down, bilinear up, untrained ResNet critic, softplus loss, Huber lambda 100, R1 gamma 10,
# instance smoothing beta 0.5 -> 0 over the run, instance noise with the critical scale
# sigma^2 = |f'(0)| / |f''(0)| = 2 for softplus, decayed to 0 over 500 iterations.
_S001_MODEL = {"g_norm": "instance", "g_skip_norm": True, "g_down": "maxpool", "g_up": "bilinear",
               "g_dropout_blocks": (), "d_norm": "batch"}
_S001_GAN = {"objective": "softplus", "l1_weight": 0.0, "huber_weight": 100.0, "r1_gamma": 10.0,
             "instance_smoothing": 0.5, "instance_smoothing_iters": 1000,
             "instance_noise": 2.0**0.5, "instance_noise_iters": 500}

_S002 = {"g_depth": 8, "d_layers": PIX2PIX_LAYERS}  # 256 px, 70x70 PatchGAN
_S003_MODEL = {"g_depth": 8, "g_dropout_blocks": (3, 4, 5, 6), "d_layers": PIX2PIX_LAYERS}
_S003_TRAIN = {"batch_size": 16, "iters": 143_000, "lr_g": 2e-4, "lr_d": 2e-4,
               "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999), "lr_schedule": "cosine"}
_CELEBA_EPOCH = 162_770 // 4  # CelebA training split at batch 4


def _s004(objective: str, weights: tuple[float, float, float], lr: float, epochs: int) -> dict:
    adv, l1, l2 = weights
    model = {"g_depth": 6, "d_layers": PIX2PIX_LAYERS[:3]}
    if objective == "ebgan":
        model = {"g_depth": 6, "discriminator": "autoencoder"}
    return {
        "study": f"004 Table 1: {objective.upper()} lambda=({adv:g}, {l1:g}, {l2:g}), lr {lr:g}, "
                 f"{epochs} epoch(s), batch 4" + ("; lambda_1 = 0 trains no adversarial term" if adv == 0 else ""),
        "data": {"source": "celeba", "image_size": 64},
        "model": model,
        "gan": {"objective": {"dcgan": "vanilla"}.get(objective, objective), "adv_weight": adv,
                "l1_weight": l1, "l2_weight": l2},
        "train": {"batch_size": 4, "iters": epochs * _CELEBA_EPOCH, "lr_g": lr, "lr_d": lr},
    }


PRESETS: dict[str, dict] = {
    # The embedded default of params.yaml: pix2pix's U-Net and 70x70 PatchGAN at half width
    # (4x fewer FLOPs per image), so `make run` fits 20 minutes on 2 cores of a CPU without
    # AVX-512 in fp32 (docs/benchmarks.md). A study preset replaces it whole.
    "demo": {
        "study": "the embedded demo: pix2pix U-Net + PatchGAN at half width (32 -> 128 channels: the "
                 "shape of the base model that ships with colorray, which it fine-tunes), for laptops and "
                 "small CPUs",
        "data": {"source": "skimage", "image_size": 64},
        "model": {"g_channels": 32, "g_channels_max": 128, "d_channels": 32},
        "gan": {},
        "train": {},
    },
    "000-cgan": {
        "study": "000: cGAN, BCE with D loss halved + lambda 100 L1, batch 128, 100 epochs",
        "data": {"source": "tiny-imagenet", "image_size": 64},
        "model": _S000,
        "gan": {"objective": "vanilla", "l1_weight": 100.0},
        "train": {"batch_size": 128, "iters": 100 * 100_000 // 128},
    },
    "000-wgan": {
        "study": "000: WGAN, same nets without sigmoid, clip 0.01, 10 critic steps per G step, RMSprop",
        "data": {"source": "tiny-imagenet", "image_size": 64},
        "model": _S000,
        "gan": {"objective": "wgan", "clip": 0.01, "n_critic": 10, "l1_weight": 100.0},
        "train": {"batch_size": 128, "iters": 100 * 100_000 // 128},
    },
    "001-H": {
        "study": "001 Table 1 H (best MNIST, FID 10.228): Huber 100, R1 10, InS, InN 500, no GP",
        "data": {"source": "colorized-mnist", "image_size": 32},
        "model": {**_S001_MODEL, "g_depth": 2, "discriminator": "resnet18"},
        "gan": _S001_GAN,
        "train": {"batch_size": 32, "iters": 1000, "lr_g": 5e-5, "lr_d": 5e-5},
    },
    "001-L": {
        "study": "001 Table 1 L (Athletic Fields baseline, FID 25.579): H's settings, 7 blocks, ResNet-152",
        "data": {"source": "places365", "image_size": 128},
        "model": {**_S001_MODEL, "g_depth": 7, "discriminator": "resnet152"},
        "gan": _S001_GAN,
        "train": {"batch_size": 32, "iters": 1000, "lr_g": 1e-4, "lr_d": 1e-4},
    },
    "001-Q": {
        "study": "001 Table 1 Q (best Athletic Fields, FID 25.283): L + gradient penalty on x_F",
        "data": {"source": "places365", "image_size": 128},
        # A gradient penalty refuses BatchNorm: the ResNet-152 critic uses instance norm here.
        "model": {**_S001_MODEL, "g_depth": 7, "discriminator": "resnet152", "d_norm": "instance"},
        "gan": {**_S001_GAN, "gp_weight": 10.0, "gp_target": "smoothed_fake"},
        "train": {"batch_size": 32, "iters": 1000, "lr_g": 1e-4, "lr_d": 1e-4},
    },
    "001-S": {
        "study": "001 Table 1 S (FID 25.296): reconstruction only (Huber), no adversarial loss",
        "data": {"source": "places365", "image_size": 128},
        "model": {**_S001_MODEL, "g_depth": 7},
        "gan": {"objective": "softplus", "adv_weight": 0.0, "l1_weight": 0.0, "huber_weight": 100.0},
        "train": {"batch_size": 32, "iters": 1000, "lr_g": 1e-4, "lr_d": 1e-4},
    },
    "002-cgan-b8": {
        "study": "002: cGAN, lambda 100, Adam (0.5, 0.999), batch 8, 100 epochs of D_GAN_s (9,600)",
        "data": {"source": "coco2017", "image_size": 256, "dataset_size": 9600},
        "model": _S002,
        "gan": {"objective": "vanilla", "l1_weight": 100.0},
        "train": {"batch_size": 8, "iters": 100 * 9600 // 8},
    },
    "002-cgan-b32": {
        "study": "002: cGAN, lambda 100, Adam (0.5, 0.999), batch 32, 100 epochs of D_GAN_s (9,600)",
        "data": {"source": "coco2017", "image_size": 256, "dataset_size": 9600},
        "model": _S002,
        "gan": {"objective": "vanilla", "l1_weight": 100.0},
        "train": {"batch_size": 32, "iters": 100 * 9600 // 32},
    },
    "002-wgan-gp": {
        "study": "002: WGAN-GP, 60 epochs L1-only then 60 adversarial with lambda 1, n_critic 5, "
                 "GP 10, instance-norm critic with Adam (0, 0.9); batch 32 (not stated)",
        "data": {"source": "coco2017", "image_size": 256, "dataset_size": 9600},
        "model": {**_S002, "d_norm": "instance"},
        "gan": {"objective": "wgan-gp", "l1_weight": 1.0, "n_critic": 5, "gp_weight": 10.0,
                "pretrain_iters": 60 * 9600 // 32},
        "train": {"batch_size": 32, "iters": 120 * 9600 // 32, "betas_g": (0.5, 0.999)},
    },
    "003-gan": {
        "study": "003: GAN, U-Net 8+8 blocks, dropout from the 4th decoder block, 70x70 PatchGAN, "
                 "Adam 2e-4 beta1 0.5, cosine to lr/10, batch 16, 100 epochs of COCO 20%",
        "data": {"source": "coco2017", "image_size": 256, "subset_fraction": 0.2, "min_chroma": 3.0},
        "model": _S003_MODEL,
        "gan": {"objective": "vanilla", "l1_weight": 100.0},
        "train": _S003_TRAIN,
    },
    "003-pixelgan": {
        "study": "003: PixelGAN, 003-gan with PixelTCL (Gao et al.) replacing transposed convolutions",
        "data": {"source": "coco2017", "image_size": 256, "subset_fraction": 0.2, "min_chroma": 3.0},
        "model": {**_S003_MODEL, "g_up": "pixeltcl"},
        "gan": {"objective": "vanilla", "l1_weight": 100.0},
        "train": _S003_TRAIN,
    },
    "003-wgan-gp": {
        "study": "003: WGAN-GP with the DCGAN critic they fell back to (dense single output), "
                 "no BatchNorm in the critic, 5 critic steps",
        "data": {"source": "coco2017", "image_size": 256, "subset_fraction": 0.2, "min_chroma": 3.0},
        "model": {**_S003_MODEL, "discriminator": "dcgan", "d_norm": "none"},
        "gan": {"objective": "wgan-gp", "n_critic": 5, "l1_weight": 100.0},
        "train": {**_S003_TRAIN, "lr_g": 1e-4, "lr_d": 1e-4, "betas_g": (0.0, 0.9), "betas_d": (0.0, 0.9)},
    },
    "004-dcgan-100-0-1": _s004("dcgan", (100, 0, 1), 1e-4, 8),
    "004-dcgan-0-1-1": _s004("dcgan", (0, 1, 1), 2e-5, 8),
    "004-lsgan-100-0-1": _s004("lsgan", (100, 0, 1), 1e-4, 4),
    "004-lsgan-0-1-1": _s004("lsgan", (0, 1, 1), 1e-4, 6),
    "004-ebgan-100-0-1": _s004("ebgan", (100, 0, 1), 1e-3, 1),
    "004-ebgan-0-1-1": _s004("ebgan", (0, 1, 1), 1e-3, 1),
    "004-wgan-100-0-1": _s004("wgan", (100, 0, 1), 5e-5, 2),
    "004-wgan-0-1-1": _s004("wgan", (0, 1, 1), 5e-5, 3),
    "004-zhang": {
        "study": "004: Zhang et al.'s colorization CNN regressing ab with L1 + L2 (their non-GAN baseline)",
        "data": {"source": "celeba", "image_size": 64},
        "model": {"generator": "zhang"},
        "gan": {"objective": "vanilla", "adv_weight": 0.0, "l1_weight": 1.0, "l2_weight": 1.0},
        "train": {"batch_size": 4, "iters": 4 * _CELEBA_EPOCH, "lr_g": 1e-4},
    },
}
