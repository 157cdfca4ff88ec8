"""Every metric of the registry against an independent computation (issue 6, item 3)."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from colorray.color import rgb_uint8_to_lab
from colorray.metrics import colorfulness
from colorray.metrics import classifier as clf
from colorray.metrics.registry import (MetricAccumulator, lpips_model, lpips_unavailable_message,
                                       lpips_weights_path, psnr, ssim, uiqi)


def _images(seed=0, n=2, size=32):
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.uniform(0, 255, (n, size, size, 3)), (0, 2, 2, 0))
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255)
    return base.round().astype(np.uint8), noisy.round().astype(np.uint8)


def test_psnr_is_the_textbook_formula():
    a, b = _images()
    mse = np.mean((a[0].astype(float) - b[0].astype(float)) ** 2)
    assert psnr(b[0], a[0], 255) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-9)
    assert psnr(a[0], a[0], 255) == 100.0  # identical: capped, not infinite


def _ssim_direct(x, y, win=7, L=255.0):
    """Wang et al. (2004) with a 7x7 uniform window and sample covariances, on one channel."""
    x, y = x.astype(float), y.astype(float)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda im: ndimage.uniform_filter(im, win)  # noqa: E731
    n = win * win
    mx, my = f(x), f(y)
    vx = (f(x * x) - mx * mx) * n / (n - 1)
    vy = (f(y * y) - my * my) * n / (n - 1)
    cxy = (f(x * y) - mx * my) * n / (n - 1)
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    p = (win - 1) // 2
    return s[p:-p, p:-p].mean()


def test_ssim_matches_the_formula_on_each_channel():
    a, b = _images(1)
    direct = np.mean([_ssim_direct(b[0][..., c], a[0][..., c]) for c in range(3)])
    assert ssim(b[0], a[0]) == pytest.approx(direct, abs=1e-6)
    assert ssim(a[0], a[0]) == pytest.approx(1.0)


def _uiqi_direct(x, y, size=11, sigma=1.5):
    """Wang & Bovik's Q = 4 s_xy m_x m_y / ((s_x^2 + s_y^2)(m_x^2 + m_y^2)), local statistics in
    an 11x11 Gaussian window (torchmetrics' choice), averaged away from the borders."""
    g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    g /= g.sum()
    k = np.outer(g, g)
    f = lambda im: ndimage.correlate(im, k, mode="mirror")  # noqa: E731  (torch's "reflect")
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    q = 4 * cxy * mx * my / ((vx + vy) * (mx ** 2 + my ** 2))
    p = size // 2
    return q[p:-p, p:-p].mean()


def test_uiqi_is_one_for_identical_images_and_matches_the_formula():
    a, b = _images(2, size=48)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    assert uiqi(x, x).numpy() == pytest.approx([1.0, 1.0], abs=1e-3)  # float32 statistics
    direct = np.mean([_uiqi_direct(b[0][..., c] / 255.0, a[0][..., c] / 255.0) for c in range(3)])
    assert float(uiqi(y[:1], x[:1])[0]) == pytest.approx(direct, abs=2e-3)


def test_colorfulness_of_a_half_red_image_is_worked_by_hand():
    # Half the pixels (255, 0, 0), half black: rg = 255 | 0 and yb = 127.5 | 0, so std and mean
    # are 127.5 and 63.75 both: CF = (1 + 0.3) * sqrt(127.5^2 + 63.75^2) = 185.31...
    img = torch.zeros(1, 3, 4, 4)
    img[0, 0, :2] = 1.0
    assert float(colorfulness(img)[0]) == pytest.approx(1.3 * math.hypot(127.5, 63.75), rel=1e-6)
    assert float(colorfulness(torch.full((1, 3, 4, 4), 0.5))[0]) == 0.0


def test_cim_and_omega_on_a_hand_worked_toy():
    # w = |p_color - p_gray| = (0.8, 0, 0.2): CIM = (0.8 * 0.5 + 0 * 0.9 + 0.2 * 1.0) / 1.0 = 0.6
    p_color, p_gray = torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.1, 0.5, 0.5])
    assert clf.cim(torch.tensor([0.5, 0.9, 1.0]), p_color, p_gray) == pytest.approx(0.6)
    assert clf.cim(p_color, p_color, p_gray) == pytest.approx((0.8 * 0.9 + 0.2 * 0.7) / 1.0)
    assert math.isnan(clf.cim(p_color, p_gray, p_gray))  # color changes nothing: undefined
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        a.weight[:] = torch.tensor([[1.0, 2.0]]); a.bias[:] = 0.5
        b.weight[:] = torch.tensor([[0.0, 4.0]]); b.bias[:] = -0.5
    assert clf.omega(a, b) == pytest.approx(1 + 4 + 1)  # (1-0)^2 + (2-4)^2 + (0.5+0.5)^2


def test_the_classifier_learns_color_and_omega_grows_with_the_data_change():
    # Two classes that differ only by hue: real images are separable, gray ones are not.
    rng = np.random.default_rng(0)
    n = 128
    y = torch.arange(n) % 2
    rgb = np.full((n, 16, 16, 3), 128, np.uint8)
    rgb[y.numpy() == 0, :, :, 0] = 200
    rgb[y.numpy() == 1, :, :, 2] = 200
    rgb = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
    real = torch.from_numpy(rgb)
    gray = torch.from_numpy(np.repeat(rgb.mean(3, keepdims=True).round().astype(np.uint8), 3, 3))
    kw = dict(epochs=15, batch_size=32, lr=3e-3, seed=0, width=8)
    m_real = clf.train_classifier(real, y, 2, **kw)
    assert clf.accuracy(clf.predict(m_real, real), y) == 1.0
    assert clf.omega(m_real, clf.train_classifier(real, y, 2, **kw)) == 0.0  # same seed, same data
    assert clf.omega(m_real, clf.train_classifier(gray, y, 2, **kw)) > 0.0


def test_the_accumulator_gives_every_metric_and_the_delta_cf_convention():
    a, b = _images(3, n=4)
    L, ab_true = rgb_uint8_to_lab(torch.from_numpy(a))
    _, ab_pred = rgb_uint8_to_lab(torch.from_numpy(b))
    acc = MetricAccumulator()
    acc.update(L[:2], ab_pred[:2], ab_true[:2])
    acc.update(L[2:], ab_pred[2:], ab_true[2:])
    m = acc.result()
    assert m["images"] == 4 and m["l1"] == pytest.approx(float((ab_pred - ab_true).abs().mean()), rel=1e-6)
    assert m["delta_cf"] == pytest.approx(abs(m["colorfulness"] - m["colorfulness_true"]))
    same = MetricAccumulator()
    same.update(L, ab_true, ab_true)
    r = same.result()
    assert r["l1"] == 0 and r["psnr"] == r["psnr_ab"] == 100.0 and r["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no images"):
        MetricAccumulator().result()


def test_lpips_is_zero_for_identical_images_and_follows_its_definition():
    """With a random AlexNet backbone (the pretrained one is not on this machine): LPIPS is the
    sum over layers of the spatial mean of lin_l((f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2)."""
    model = lpips_model(pretrained_backbone=False)
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert model(x, x).flatten().abs().max() < 1e-6
    fx, fy = model.net(model.scaling_layer(x)), model.net(model.scaling_layer(y))
    unit = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # noqa: E731
    direct = sum(lin((unit(a) - unit(b)) ** 2).mean((2, 3)) for lin, a, b in zip(model.lins, fx, fy))
    assert model(x, y).flatten() == pytest.approx(direct.flatten(), rel=1e-5)


def test_lpips_without_its_weights_names_the_file_to_download():
    if lpips_weights_path().is_file():
        pytest.skip("the AlexNet weights are installed here")
    assert lpips_model() is None
    msg = lpips_unavailable_message()
    assert str(lpips_weights_path()) in msg and "alexnet-owt" in msg


def test_the_lpips_weights_are_the_file_torchvision_reads():
    """colorray names AlexNet's weights file without importing torchvision.models (seconds)."""
    from torchvision.models import AlexNet_Weights

    from colorray.metrics.registry import LPIPS_WEIGHTS_URL

    assert LPIPS_WEIGHTS_URL == AlexNet_Weights.DEFAULT.url
    assert lpips_weights_path().name == AlexNet_Weights.DEFAULT.url.rsplit("/", 1)[1]


def test_every_metric_that_can_select_a_model_has_a_direction_in_the_registry():
    """Selection, the report and tune read which way is better from the registry: every
    evaluate.select_by choice and every tune.metric must have one there."""
    from typing import get_args

    from colorray.config import EvaluateParams, TuneParams
    from colorray.metrics.registry import HIGHER, LOWER, NEITHER, better

    select_by = set(get_args(EvaluateParams.model_fields["select_by"].annotation)) - {"auto"}
    assert all(better(m) in (LOWER, HIGHER) for m in select_by), {m: better(m) for m in select_by}
    tune = set(get_args(TuneParams.model_fields["metric"].annotation)) - {"auto"}
    assert all(better(m) == LOWER for m in tune)  # the sweep ranks lowest first
    assert better("val/psnr") == HIGHER and better("colorfulness") == NEITHER and better("nonesuch") == NEITHER


def test_photos_that_are_gray_already_are_counted_not_scored():
    """A black-and-white photo in a set of color ones has nothing to restore: leaving it gray
    reproduces it exactly (100 dB), which would raise gray's mean PSNR above any colorizer's.
    It is left out of every metric and counted."""
    color, _ = _images(n=2, size=32)
    bw = np.repeat(color[:1].mean(-1, keepdims=True).round().astype(np.uint8), 3, axis=-1)
    bw[0, 0, 0] = (120, 122, 121)  # JPEG leaves a level or two in a gray photo's channels
    L, ab = rgb_uint8_to_lab(torch.from_numpy(np.concatenate([color, bw])), "cpu")
    gray_guess = torch.zeros_like(ab)

    both, alone = MetricAccumulator(), MetricAccumulator()
    rgb = both.update(L, gray_guess, ab)
    alone.update(L[:2], gray_guess[:2], ab[:2])
    assert rgb.shape[0] == 3  # the caller still gets every photo colorized
    r, a = both.result(), alone.result()
    assert (r["images"], r["gray_photos"], a["gray_photos"]) == (2, 1, 0)
    assert r["psnr"] == a["psnr"] < 100 and r["colorfulness_true"] == a["colorfulness_true"]

    only_bw = MetricAccumulator()
    only_bw.update(L[2:], gray_guess[2:], ab[2:])
    with pytest.raises(ValueError, match=r"no images to measure \(1 photos, all gray already\)"):
        only_bw.result()
