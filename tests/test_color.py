import warnings

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.color import lab2rgb, rgb2lab

from colorray.color import lab_to_rgb, lab_to_rgb_normalized, rgb_to_lab, rgb_uint8_to_lab


def _lab_from_normalized(L, ab):
    return torch.cat(((L + 1) * 50, ab * 110), 1).permute(0, 2, 3, 1).double().numpy()


@pytest.mark.parametrize("kind", ["random", "astronaut"])
def test_uint8_to_lab_matches_skimage_within_1e_3(kind):
    if kind == "random":
        rgb = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    else:
        rgb = skdata.astronaut()[None, ::4, ::4].copy()
    L, ab = rgb_uint8_to_lab(torch.from_numpy(rgb))
    assert L.shape == (rgb.shape[0], 1, *rgb.shape[1:3]) and ab.shape[1] == 2
    assert np.abs(_lab_from_normalized(L, ab) - rgb2lab(rgb)).max() < 1e-3


def test_float_rgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(1).random((2, 8, 8, 3))
    got = rgb_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - rgb2lab(rgb)).max() < 1e-3


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
    rng = np.random.default_rng(2)
    lab = np.concatenate([rng.uniform(0, 100, (2, 8, 8, 1)), rng.uniform(-110, 110, (2, 8, 8, 2))], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about clipped negative z
        ref = lab2rgb(lab)
    got = lab_to_rgb(torch.from_numpy(lab).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - ref).max() < 1e-3


def test_round_trip_recovers_the_uint8_image():
    rgb = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    back = lab_to_rgb_normalized(*rgb_uint8_to_lab(torch.from_numpy(rgb)))
    assert np.abs(back.permute(0, 2, 3, 1).numpy() * 255 - rgb).max() < 0.5


def test_gray_pixels_have_zero_ab():
    gray = np.repeat(np.arange(0, 256, 5, dtype=np.uint8)[None, :, None, None], 3, -1)
    L, ab = rgb_uint8_to_lab(torch.from_numpy(gray))
    assert ab.abs().max() < 1e-4 and L.min() >= -1 and L.max() <= 1
