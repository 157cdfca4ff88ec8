"""The MLflow model colorray logs (train stage) and registers (`models:/colorray@champion`,
evaluate stage): a models-from-code pyfunc. Its code is colorray's own (`pyfunc_code.py`, with
the package as code_paths), its only artifact the generator weights file, read with
torch.load(weights_only=True): loading it unpickles nothing.

    model = mlflow.pyfunc.load_model("models:/colorray@champion")
    rgb = model.predict(gray)            # (H, W) or (H, W, 3) uint8 array -> (H, W, 3) uint8
    png = model.predict(open("old.jpg", "rb").read())   # image file bytes -> PNG bytes
    rgb = model.predict(gray, params={"render_size": 256})  # the generator sees short side 256

For `mlflow models serve` (JSON in, JSON out) the input is a table with a column `image` of
base64-encoded image files (PNG, JPEG, ...); the output has a column `image` of base64 PNGs:

    {"dataframe_split": {"columns": ["image"], "data": [["<base64 of photo.jpg>"]]},
     "params": {"render_size": 256}}

A request is refused whole, with HTTP 400 and one line naming each bad row and why, when a
cell is not a base64 string, a file is not an accepted image, an image is over MAX_PIXELS, or
the request is over MAX_REQUEST_PIXELS / MAX_REQUEST_BYTES together.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import mlflow
import numpy as np

import colorray
from colorray.colorize import MAX_RENDER_SIZE, RenderTooLarge, colorize, render_shape, stride_of
from colorray.data.decode import BadImage, decode_image as decode, image_size
from colorray.images import encode
from colorray.models.files import load_generator
from colorray.precision import for_inference

MAX_PIXELS = 40_000_000  # one image (a 40 MP photo needs about 1 GB to colorize at full size)
MAX_REQUEST_PIXELS = 80_000_000  # all images of one request
MAX_REQUEST_BYTES = 200 * 2**20  # all encoded files of one request
CODE = Path(__file__).with_name("pyfunc_code.py")


class RequestError(ValueError):
    """A request the model refuses; becomes HTTP 400 with this message."""


def decode_image(data: bytes | str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes (or their base64) -> (H, W, 3) uint8, by the shard stage's defensive decoder
    (16-bit, palette, alpha, CMYK, EXIF orientation; a clear error for anything else)."""
    return decode(_file_bytes(data), max_pixels=max_pixels)


def _file_bytes(cell) -> bytes:
    if isinstance(cell, str):
        try:
            return base64.b64decode(cell, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("not base64 (expected an image file, base64-encoded)") from None
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    raise RequestError(f"a {type(cell).__name__}, not a base64 string of an image file")


def encode_png(rgb: np.ndarray) -> str:
    return base64.b64encode(encode(rgb, "png")).decode("ascii")


def decode_rows(cells) -> list[np.ndarray]:
    """Every cell of a request decoded, or one RequestError naming each bad row and why."""
    errors, files, pixels, size = [], [], 0, 0
    for i, cell in enumerate(cells):
        try:
            data = _file_bytes(cell)
            size += len(data)
            w, h = image_size(data, MAX_PIXELS)
            pixels += w * h
            files.append(data)
        except (RequestError, BadImage) as e:
            errors.append(f"row {i}: {e}")
    if not errors and size > MAX_REQUEST_BYTES:
        errors.append(f"the request's files are {size / 2**20:.0f} MiB together, over {MAX_REQUEST_BYTES / 2**20:.0f} MiB")
    if not errors and pixels > MAX_REQUEST_PIXELS:
        errors.append(f"the request's images are {pixels / 1e6:.0f} megapixels together, over "
                      f"{MAX_REQUEST_PIXELS / 1e6:.0f}; send fewer per request")
    images = []
    for i, data in enumerate(files if not errors else []):
        try:
            images.append(decode_image(data))
        except BadImage as e:
            errors.append(f"row {i}: {e}")
    if errors:
        raise RequestError(f"{len(errors)} problem(s) in a request of {len(cells)} row(s): " + "; ".join(errors))
    return images


def render_size(params: dict | None) -> int | None:
    """The `render_size` inference parameter: 0 or absent, the size the model was trained at;
    N, the generator sees the photo at short side N (colorray.colorize.render_shape)."""
    value = (params or {}).get("render_size") or 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (value == 0 or 8 <= value <= MAX_RENDER_SIZE):
        raise RequestError(f"params.render_size {value!r}: 0 (the training size) or a short side of 8 to "
                           f"{MAX_RENDER_SIZE} pixels")
    return int(value) or None


class ColorizerModel(mlflow.pyfunc.PythonModel):
    """Artifacts: `generator`, a generator file (colorray.models.files.save_generator)."""

    def load_context(self, context) -> None:
        self.generator, params, _ = load_generator(context.artifacts["generator"])  # fp32, as trained
        self.image_size = params.data.image_size
        self.G = for_inference(self.generator, self.image_size, batch=1)  # the fastest precision here

    def predict(self, context, model_input, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            render = render_size(params)
        except RequestError as e:  # MLflow's scoring server answers an MlflowException with its HTTP code
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None

        def checked(images: list[np.ndarray]) -> list[np.ndarray]:
            """Refuse (400) before any work when a render shape is over MAX_RENDER_PIXELS."""
            try:
                for im in images:
                    render_shape(*im.shape[:2], self.image_size, render, stride_of(self.G))
            except RenderTooLarge as e:
                raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
            return images

        if isinstance(model_input, np.ndarray):
            return colorize(self.G, checked([model_input])[0], self.image_size, render_size=render)
        if isinstance(model_input, (bytes, bytearray)):  # an image file's bytes -> a PNG file's bytes
            rgb = colorize(self.G, checked([decode_image(model_input)])[0], self.image_size, render_size=render)
            return base64.b64decode(encode_png(rgb))
        import pandas as pd

        if isinstance(model_input, pd.DataFrame) and "image" in model_input.columns:
            try:
                images = checked(decode_rows(list(model_input["image"])))
            except RequestError as e:
                raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
            return pd.DataFrame({"image": [encode_png(colorize(self.G, im, self.image_size, render_size=render))
                                           for im in images]})
        raise TypeError("colorray model input: an image array, or a table with a column 'image' of "
                        f"base64-encoded image files (got {type(model_input).__name__})")


def log_colorizer(generator: str | Path, registered_model_name: str | None = None, tags: dict | None = None):
    """Log `generator` (a generator file) as the colorizer model of the active run; returns
    MLflow's ModelInfo (its model_id: `models:/<model_id>`). Signature: a string column `image`
    in, a string column `image` out, the inference parameter `render_size`."""
    import pandas as pd
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    example = pd.DataFrame({"image": [encode_png(np.full((16, 16, 3), 128, np.uint8))]})
    schema = Schema([ColSpec("string", "image")])
    params = ParamSchema([ParamSpec("render_size", "long", 0)])  # 0: the training size
    return mlflow.pyfunc.log_model(
        name="colorizer", python_model=str(CODE), artifacts={"generator": str(generator)},
        code_paths=[str(Path(colorray.__file__).parent)], registered_model_name=registered_model_name, tags=tags,
        signature=ModelSignature(inputs=schema, outputs=schema, params=params), input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "scikit-image", "pillow", "pandas"])
