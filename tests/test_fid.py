"""FID machinery with an injected small feature extractor (the Inception weights cannot be
downloaded here): exact distances on known Gaussians, FID(x, x) = 0, the on-disk cache, the
message when the weights are absent, and val/fid during validation."""
import numpy as np
import pytest
import torch

from colorray.metrics.fid import (WEIGHTS_FILE, FIDUnavailable, activation_statistics, cached_statistics,
                                  fid_weights_path, frechet_distance, inception_extractor)


class CountingExtractor:
    """A fixed random 3x3 conv + global average pool: 8 features per image."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.weight = torch.randn(8, 3, 3, 3, generator=g)
        self.calls = 0
        self.detector_id = "test-conv-8"

    def __call__(self, rgb):
        self.calls += 1
        return torch.nn.functional.conv2d(rgb.float(), self.weight).relu().mean((2, 3))


def test_frechet_distance_of_known_gaussians_is_exact():
    # Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2)).
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 4) + (4 + 1 - 4) + (9 + 1 - 6)
    assert frechet_distance((mu1, np.diag(s1)), (mu2, np.diag(s2))) == pytest.approx(expected, abs=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 16, 16, generator=g)
    ex = CountingExtractor()
    a = activation_statistics([x[:32], x[32:]], ex)
    assert a[2] == 64
    assert abs(frechet_distance(a, a)) < 1e-6
    b = activation_statistics([(x * 0.5).clamp(0, 1)], ex)
    assert frechet_distance(a, b) > 1e-3


def test_real_statistics_are_cached_per_data_and_detector(tmp_path):
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ex = CountingExtractor()
    first = cached_statistics("val-v1", tmp_path, lambda: [x], ex)
    again = cached_statistics("val-v1", tmp_path, lambda: [x], ex)
    assert ex.calls == 1  # the second call read the file
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and again[2] == 16
    cached_statistics("val-v2", tmp_path, lambda: [x], ex)  # other data: computed anew
    assert ex.calls == 2 and len(list(tmp_path.glob("fid-stats-*.npz"))) == 2


def test_absent_weights_name_the_exact_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert fid_weights_path() == tmp_path / "th" / "hub" / "checkpoints" / WEIGHTS_FILE
    with pytest.raises(FIDUnavailable, match=str(tmp_path / "th" / "hub" / "checkpoints" / WEIGHTS_FILE)):
        inception_extractor()
    with pytest.raises(FIDUnavailable, match=str(tmp_path / "mine.pth")):
        inception_extractor(str(tmp_path / "mine.pth"))


def test_the_weights_url_is_pytorch_fids():
    """colorray names the file pytorch-fid's loader fetches without importing it (seconds)."""
    from pytorch_fid.inception import FID_WEIGHTS_URL as theirs

    from colorray.metrics.fid import FID_WEIGHTS_URL

    assert FID_WEIGHTS_URL == theirs and theirs.endswith("/" + WEIGHTS_FILE)


def test_validation_reports_val_fid_with_an_injected_extractor(tmp_path, skimage_shards):
    from colorray.config import parse_params
    from colorray.train.loop import validate
    from colorray.train.step import GANTrainer

    params = parse_params({"model": {"g_channels": 4, "g_channels_max": 8, "g_depth": 3}})
    G = GANTrainer(params, "cpu").G
    ex = CountingExtractor()
    m1, _ = validate(G, skimage_shards, "cpu", max_images=64, fid=ex, fid_cache=tmp_path)
    m2, _ = validate(G, skimage_shards, "cpu", max_images=64, fid=ex, fid_cache=tmp_path)
    assert m1["val/fid"] > 0 and m1["val/fid"] == pytest.approx(m2["val/fid"])
    assert len(list(tmp_path.glob("fid-stats-*.npz"))) == 1
