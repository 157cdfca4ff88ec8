"""base/calibrate.py: the base model's chroma gain, chosen on the val split by its rule."""
import importlib.util

import pytest
import torch

from colorray.colorize import load_model
from colorray.config import parse_params
from colorray.models import build_generator
from colorray.models.files import read_model_file, save_generator
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("calibrate", ROOT / "base" / "calibrate.py")
calibrate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibrate)


def _row(psnr, ssim, delta_cf):
    return {"psnr": psnr, "ssim": ssim, "delta_cf": delta_cf}


def test_the_gain_is_the_most_faithful_colorfulness_within_the_margins_of_gray():
    rows = {"gray": _row(23.0, 0.93, 40.0),
            0.5: _row(23.2, 0.929, 22.0),
            0.7: _row(22.8, 0.922, 15.0),   # loses 0.2 dB: inside a 0.25 dB margin
            0.9: _row(22.0, 0.910, 8.0),    # the most colorful, but 1 dB worse than gray
            0.8: _row(22.9, 0.850, 11.0)}   # within the PSNR margin, not the SSIM one
    assert calibrate.choose(rows, margin=0.25, max_ssim_loss=0.05) == 0.7
    assert calibrate.choose(rows, margin=1.0, max_ssim_loss=0.05) == 0.9
    assert calibrate.choose(rows, margin=0.25, max_ssim_loss=0.002) == 0.5
    assert calibrate.choose({"gray": rows["gray"], 0.9: rows[0.9]}, margin=0.25, max_ssim_loss=0.05) is None


def test_calibrate_writes_the_generator_with_its_gain_and_never_reads_the_test_split(tmp_path, skimage_shards,
                                                                                  monkeypatch, capsys):
    raw = {"data": {"image_size": 64}, "model": {"g_channels": 4, "g_channels_max": 8}}
    torch.manual_seed(0)
    params = parse_params(raw)
    G = build_generator(params).eval()
    save_generator(G, params, 5, tmp_path / "generator.pt")
    splits = []
    real_loader = calibrate.make_loader
    monkeypatch.setattr(calibrate, "make_loader", lambda shards, split, *a, **k: (
        splits.append(split), real_loader(shards, split, *a, **k))[1])

    calibrate.main([str(tmp_path / "generator.pt"), "--shards", str(skimage_shards), "--out",
                    str(tmp_path / "calibrated.pt"), "--table", str(tmp_path / "gains.json"), "--margin", "5", "--max-images", "64"])
    assert set(splits) == {"val"}
    out = read_model_file(tmp_path / "calibrated.pt")
    gain = out.params.model.chroma_gain
    assert gain in calibrate.GAINS and out.meta["calibration"]["gain"] == gain and out.iter == 5
    assert f"chroma_gain {gain}" in capsys.readouterr().out
    shipped, _ = load_model(str(tmp_path / "calibrated.pt"))
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(shipped.float()(L), gain * G(L), atol=1e-6)

    pale = parse_params({**raw, "model": {**raw["model"], "chroma_gain": 0.5}})
    save_generator(build_generator(pale), pale, 5, tmp_path / "pale.pt")
    with pytest.raises(SystemExit, match="already has chroma_gain 0.5"):
        calibrate.main([str(tmp_path / "pale.pt"), "--shards", str(skimage_shards), "--out",
                        str(tmp_path / "again.pt")])
    assert not (tmp_path / "again.pt").exists()
