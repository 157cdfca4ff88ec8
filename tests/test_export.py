"""colorray export / colorray.onnx_runtime: a generator as ONNX (dynamic batch, height and
width) with its processing described, that ONNX Runtime runs as PyTorch does, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from torch.nn import functional as F

from colorray.colorize import colorize, full_resolution_L, model_input, render_shape, stride_of
from colorray.config import parse_params
from colorray.models import build_generator
from colorray.models.files import load_generator, save_generator
from colorray.onnx_runtime import OnnxColorizer

# One test process for the whole module (make test: --dist loadgroup), so that its module fixture
# (a model logged to MLflow and exported) is built once.
pytestmark = pytest.mark.xdist_group("export")

SMALL = {"model": {"g_channels": 8, "g_channels_max": 16}}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread(one_torch_thread):
    """Tiny tensors: one intra-op thread (conftest)."""
    yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread):
    """A tiny generator, logged to MLflow as colorray's model, exported from its models:/ URI
    by the command (one export for the whole module: it takes seconds)."""
    import mlflow

    from colorray.cli import main
    from colorray.model_uri import mlflow_tracking
    from colorray.pyfunc import log_colorizer

    tmp = tmp_path_factory.mktemp("export")
    params = parse_params(SMALL)
    torch.manual_seed(0)
    G = build_generator(params)
    for m in G.modules():  # BatchNorm statistics away from (0, 1), so that eval mode shows in the output
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    save_generator(G, params, 0, tmp / "generator.pt")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with mlflow_tracking(uri):
        with mlflow.start_run(experiment_id=mlflow.create_experiment("e", artifact_location=str(tmp / "art"))) as run:
            log_colorizer(tmp / "generator.pt", registered_model_name="colorray")
    main(["export", "models:/colorray/1", "--format", "onnx", "--out", str(tmp / "g.onnx"), "--tracking-uri", uri])
    return {"dir": tmp, "onnx": tmp / "g.onnx", "pt": tmp / "generator.pt", "uri": uri, "run_id": run.info.run_id}


def test_the_sidecar_describes_the_processing_and_mlflow_has_the_file(exported):
    from mlflow import MlflowClient

    from colorray.model_uri import mlflow_tracking

    info = json.loads(Path(str(exported["onnx"]) + ".json").read_text())
    assert info["input"]["name"] == "L" and info["output"]["name"] == "ab"
    assert (info["input"]["L_scale"], info["output"]["ab_scale"], info["stride"], info["image_size"]) == (50, 110, 64, 64)
    assert info["opset"] >= 17 and info["model"] == "models:/colorray/1"
    assert sorted(p.name for p in exported["dir"].iterdir() if p.name.startswith(("g.", ".g"))) == ["g.onnx",
                                                                                                   "g.onnx.json"]
    with mlflow_tracking(exported["uri"]):
        logged = [a.path for a in MlflowClient().list_artifacts(exported["run_id"], "onnx")]
    assert logged == ["onnx/g.onnx", "onnx/g.onnx.json"]


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 1, 128, 320), (2, 1, 448, 192)])
def test_onnx_runtime_matches_pytorch_for_any_batch_and_size(exported, shape):
    G, _, _ = load_generator(exported["pt"])
    L = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
    with torch.no_grad():
        expected = G.eval()(L).numpy()
    got = OnnxColorizer(exported["onnx"]).predict(L.numpy())
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-3


@pytest.mark.parametrize("render_size", [None, 128])
def test_the_same_photo_through_pytorch_and_onnx_runtime(exported, render_size):
    """End to end: torch's pipeline (colorray.colorize) and the numpy-only one agree within
    1e-3 in normalised ab (ab / 110) at every pixel of a real photo of odd size."""
    G, params, _ = load_generator(exported["pt"])
    rgb = data.astronaut()[:301, :457]
    L = full_resolution_L(rgb)
    shape = render_shape(301, 457, 64, render_size, stride_of(G))
    with torch.no_grad():
        ab = F.interpolate(G(model_input(L, shape)), size=(301, 457), mode="bilinear", align_corners=False)[0].numpy()
    runtime = OnnxColorizer(exported["onnx"])
    L_onnx, ab_onnx = runtime.colorize_ab(rgb, render_size)
    assert np.abs(L_onnx - L[0, 0].numpy()).max() <= 1e-4
    assert np.abs(ab_onnx - ab).max() <= 1e-3
    a = colorize(G, rgb, 64, render_size=render_size).astype(int)
    b = runtime.colorize(rgb, render_size).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3  # 8-bit rounding at most


def test_the_runtime_needs_neither_torch_nor_colorray(exported, tmp_path):
    """The onnx_runtime module, copied alone, colorizes with torch made unimportable."""
    from PIL import Image

    (tmp_path / "onnx_runtime.py").write_bytes((ROOT / "colorray" / "onnx_runtime.py").read_bytes())
    Image.fromarray(data.camera()[:90, :120]).save(tmp_path / "gray.png")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['colorray'] = None\n"
            "import onnx_runtime; onnx_runtime.main(sys.argv[1:])\n"
            "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n")
    subprocess.run([sys.executable, "-c", code, str(exported["onnx"]), "gray.png", "color.png"], cwd=tmp_path,
                   check=True, timeout=120)
    G, _, _ = load_generator(exported["pt"])
    expected = colorize(G, data.camera()[:90, :120], 64).astype(int)
    got = np.asarray(Image.open(tmp_path / "color.png")).astype(int)
    assert got.shape == (90, 120, 3) and np.abs(got - expected).max() <= 1


def test_colorize_with_runtime_onnx_writes_what_pytorch_writes(exported, tmp_path):
    from PIL import Image

    from colorray.cli import main

    Image.fromarray(data.astronaut()[:120, :200]).save(tmp_path / "photo.png")
    for runtime, model in (("onnx", exported["onnx"]), ("torch", exported["pt"])):
        main(["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / runtime), "--model", str(model),
              "--runtime", runtime, "--quiet"])
    a = np.asarray(Image.open(tmp_path / "onnx" / "photo.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "torch" / "photo.png")).astype(int)
    # PyTorch runs in the precision `auto` measured fastest here (bf16 on some CPUs): close, not equal.
    assert a.shape == b.shape == (120, 200, 3) and np.abs(a - b).mean() < 2.0
    with pytest.raises(SystemExit) as e:  # dropout samples need PyTorch
        main(["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / "x"), "--model", str(exported["onnx"]),
              "--samples", "2", "--quiet"])
    assert e.value.code == 2


def test_bad_files_are_refused_clearly(tmp_path):
    from colorray.cli import main

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX model"):
        OnnxColorizer(tmp_path / "junk.onnx")
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "g.onnx")])
    assert e.value.code == 2 and not (tmp_path / "g.onnx").exists()
