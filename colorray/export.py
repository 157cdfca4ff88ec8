"""`colorray export`: a generator as an ONNX file, for ONNX Runtime and other runtimes.

The graph is the generator alone, in eval mode and fp32, with a dynamic batch, height and width
(height and width multiples of its stride): input "L" (N, 1, H, W), L / 50 - 1; output "ab"
(N, 2, H, W), a* / 110 and b* / 110. The Lab conversions and the resizing around it are not in
the graph; they are described in the model's metadata (key "colorray") and, for people and
other tools, in a JSON sidecar beside it (`g.onnx.json`). colorray.onnx_runtime implements them
with numpy and Pillow only.

The .onnx file and the sidecar are written under temporary names and renamed when complete. An
MLflow model (`models:/...`) also gets the .onnx logged as an artifact of its run (folder
`onnx/`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from colorray.atomic import publish, write_json_atomic
from colorray.color import AB_SCALE, L_SCALE
from colorray.colorize import load_model, stride_of
from colorray.model_uri import describe, is_mlflow_uri, mlflow_tracking
from colorray.onnx_runtime import METADATA_KEY, ONNX_FORMAT, OnnxColorizer

OPSET = 18  # ONNX Runtime 1.16 and later run it; the brief's floor is 17
MAX_SIDE = 65_536  # the largest height or width the graph is declared for


def describe_export(G: nn.Module, image_size: int, model: str, opset: int) -> dict:
    """What a runtime needs to know beside the graph (the sidecar's and the metadata's content)."""
    stride = stride_of(G)
    return {
        "format": ONNX_FORMAT,
        "input": {"name": "L", "shape": ["batch", 1, "height", "width"], "dtype": "float32",
                  "L_scale": L_SCALE, "normalization": f"L / {L_SCALE:g} - 1, L the CIE L* (D65, 0..100) of the sRGB "
                                                      "photo; height and width multiples of stride"},
        "output": {"name": "ab", "shape": ["batch", 2, "height", "width"], "dtype": "float32",
                   "ab_scale": AB_SCALE, "normalization": f"a* = {AB_SCALE:g} * ab[:, 0], b* = {AB_SCALE:g} * ab[:, 1]"},
        "stride": stride,
        "image_size": image_size,
        "render": (f"resize the photo's L (bilinear, antialiased) to {image_size}x{image_size} (the training size), "
                   f"or to short side N with the aspect kept and both sides rounded to multiples of {stride}; "
                   "upsample the predicted ab (bilinear) to the photo's size and join it with the photo's own "
                   "full-resolution L"),
        "opset": opset,
        "model": model,
    }


def export_onnx(G: nn.Module, image_size: int, out: str | Path, model: str = "", opset: int = OPSET) -> dict:
    """Write G (eval mode, fp32, on the CPU) to `out` (.onnx) and `out`.json; returns the sidecar."""
    import onnx

    out = Path(out)
    G = G.float().cpu().eval()
    info = describe_export(G, image_size, model, opset)
    stride = info["stride"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows = torch.export.Dim("rows", min=1, max=MAX_SIDE // stride)
    cols = torch.export.Dim("cols", min=1, max=MAX_SIDE // stride)
    example = torch.linspace(-1, 1, 2 * 2 * stride * 3 * stride).view(2, 1, 2 * stride, 3 * stride)
    with torch.no_grad():
        program = torch.onnx.export(G, (example,), input_names=["L"], output_names=["ab"], opset_version=opset,
                                    dynamo=True, external_data=False, verbose=False,
                                    dynamic_shapes={"L": {0: batch, 2: stride * rows, 3: stride * cols}})
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
        onnx.save(proto, tmp)
        OnnxColorizer(tmp)  # ONNX Runtime opens it: never publish a file it cannot run
        publish(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json_atomic(out.with_name(out.name + ".json"), info)
    return info


def export(model: str, out: str | Path, tracking_uri: str | None = None, opset: int = OPSET) -> dict:
    """Export the generator `model` names (a generator .pt, a checkpoint, a models:/ URI) to
    `out`; for an MLflow model, also log the .onnx and its sidecar to the model's run. Returns
    the sidecar, with "logged_to_run" when it was logged."""
    if opset < 17:
        raise ValueError(f"--opset {opset}: 17 or later")
    G, size = load_model(model, "cpu", tracking_uri=tracking_uri)
    info = export_onnx(G, size, out, model, opset)
    if is_mlflow_uri(model):
        run_id = describe(model, tracking_uri)["run_id"]
        if run_id:
            from mlflow import MlflowClient

            with mlflow_tracking(tracking_uri):
                client = MlflowClient()
                client.log_artifact(run_id, str(out), artifact_path="onnx")
                client.log_artifact(run_id, str(Path(out).with_name(Path(out).name + ".json")), artifact_path="onnx")
            info["logged_to_run"] = run_id
    return info


class OnnxGenerator(nn.Module):
    """An exported .onnx file as a generator module for colorray's own pipeline (photos, videos:
    `colorray colorize --runtime onnx`): torch tensors in and out, ONNX Runtime inside. Always
    eval mode (the export has no dropout)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        self.runtime = OnnxColorizer(path, threads)
        self.stride = self.runtime.stride
        self.image_size = self.runtime.image_size

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        ab = self.runtime.predict(L.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(ab)).to(L.device)
