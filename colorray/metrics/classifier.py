"""Study 002's classifier metrics: does colorization help a classifier as real color does?

A small CNN is trained on the dataset's labels (Tiny-ImageNet classes, folder names, the
embedded photos' names) from real color images, by the pipeline's `classifier` stage. Then:

- accuracy on real, gray (ab = 0) and colorized test images;
- CIM = sum_i w_i p_i^fake / sum_i w_i with w_i = |p_i^color - p_i^gray|, p_i the probability of
  image i's true class: the accuracy that counts the images whose class depends on color;
- Omega = ||w* - w_G||^2, the squared L2 distance between the weights of the classifier trained
  on real images (w*) and one trained the same way, from the same initialisation and data
  order, on the colorized training images (w_G).

Study 002 fine-tuned an ImageNet-pretrained VGG16; no pretrained weights are used here (none can
be downloaded on these machines, and a classifier of the dataset's own labels keeps the stage
self-contained), so the values are comparable between models of one evaluation, not with the
study's numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from colorray.atomic import torch_save_atomic
from colorray.progress import Progress


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (stride 2 after the first), global average pooling, a linear layer."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate((width, 2 * width, 4 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [0, 1]
        return self.head(self.features(rgb * 2 - 1))


def _input(rgb8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8, as the loader and the colorizer give them -> (N, 3, H, W) in [0, 1]."""
    return rgb8.permute(0, 3, 1, 2).float() / 255.0


def train_classifier(rgb8: torch.Tensor, labels: torch.Tensor, num_classes: int, *, epochs: int,
                     batch_size: int, lr: float, seed: int, width: int = 32,
                     progress: Progress | None = None) -> SmallCNN:
    """Adam on cross-entropy; the initialisation and the batch order depend on `seed` only, so
    two calls with the same seed differ only by the images (what Omega measures). `progress`
    is told of every batch (epochs * ceil(N / batch_size) in all)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallCNN(num_classes, width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(rgb8), generator=g)
        for i in range(0, len(rgb8), batch_size):
            idx = order[i:i + batch_size]
            if progress is not None:
                progress.update()
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            loss = nn.functional.cross_entropy(model(_input(rgb8[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, rgb8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, classes) of (N, H, W, 3) uint8 images."""
    return torch.cat([model(_input(rgb8[i:i + batch_size])).softmax(1) for i in range(0, len(rgb8), batch_size)])


def true_class_probability(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p_i: the probability of each image's true class."""
    return probs.gather(1, labels[:, None])[:, 0]


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels).float().mean())


def cim(p_fake: torch.Tensor, p_color: torch.Tensor, p_gray: torch.Tensor) -> float:
    """Study 002's color importance measure; nan when color changes no prediction (all w = 0)."""
    w = (p_color - p_gray).abs().double()
    total = float(w.sum())
    return float((w * p_fake.double()).sum()) / total if total > 0 else float("nan")


def omega(a: nn.Module, b: nn.Module) -> float:
    """Squared L2 distance between two classifiers' weights (all parameters, not BN statistics)."""
    return float(sum(((pa.detach().double() - pb.detach().double()) ** 2).sum()
                     for pa, pb in zip(a.parameters(), b.parameters(), strict=True)))


def save(model: SmallCNN, classes: list[str], settings: dict, path) -> None:
    torch_save_atomic({"format": "colorray-classifier-1", "classes": classes, "settings": settings,
                       "state": model.state_dict(), "width": model.features[0].out_channels}, path)


def save_unavailable(reason: str, path) -> None:
    """The classifier stage's output for data it cannot classify (no labels, one class): the
    evaluate stage then reports the classifier metrics as unavailable, with `reason`."""
    torch_save_atomic({"format": "colorray-classifier-1", "unavailable": reason}, path)


def load(path) -> tuple[SmallCNN | None, list[str], dict]:
    """(model, classes, settings); model None and settings {"unavailable": reason} when the
    stage had nothing to train on."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != "colorray-classifier-1":
        raise ValueError(f"{path}: not a colorray classifier (format {saved.get('format')!r})")
    if "unavailable" in saved:
        return None, [], {"unavailable": saved["unavailable"]}
    model = SmallCNN(len(saved["classes"]), saved["width"])
    model.load_state_dict(saved["state"])
    return model.eval(), saved["classes"], saved["settings"]


def label_indices(labels: list[str], classes: list[str], where: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise ValueError(f"{where}: labels the classifier was not trained on: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''} (re-run the classifier stage)")
    return torch.as_tensor(np.array([index[lab] for lab in labels]), dtype=torch.long)
