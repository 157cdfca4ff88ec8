"""The MLflow pyfunc model the evaluate stage registers as `models:/colorray@champion`.

    model = mlflow.pyfunc.load_model("models:/colorray@champion")
    rgb = model.predict(gray)            # (H, W) or (H, W, 3) uint8 array -> (H, W, 3) uint8
    png = model.predict(open("old.jpg", "rb").read())   # image file bytes -> PNG bytes

For `mlflow models serve` (JSON in, JSON out) the input is a table with a column `image` of
base64-encoded image files (PNG, JPEG, ...); the output has a column `image` of base64 PNGs:

    {"dataframe_split": {"columns": ["image"], "data": [["<base64 of photo.jpg>"]]}}
"""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np


def decode_image(data: bytes | str) -> np.ndarray:
    """Image file bytes (or their base64) -> (H, W, 3) uint8, by the shard stage's defensive decoder
    (16-bit, palette, alpha, CMYK, EXIF orientation; a clear error for anything else)."""
    from colorray.data.decode import decode_image as decode

    return decode(base64.b64decode(data) if isinstance(data, str) else bytes(data))


def encode_png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class ColorizerModel(mlflow.pyfunc.PythonModel):
    """Artifacts: `generator`, a generator file (colorray.colorize.save_generator)."""

    def load_context(self, context) -> None:
        from colorray.models.files import load_generator
        from colorray.precision import for_inference

        self.generator, params, _ = load_generator(context.artifacts["generator"])  # fp32, as trained
        self.image_size = params.data.image_size
        self.G = for_inference(self.generator, self.image_size, batch=1)  # the fastest precision here

    def predict(self, context, model_input, params=None):
        from colorray.colorize import colorize

        if isinstance(model_input, np.ndarray):
            return colorize(self.G, model_input, self.image_size)
        if isinstance(model_input, (bytes, bytearray)):  # an image file's bytes -> a PNG file's bytes
            return base64.b64decode(encode_png(colorize(self.G, decode_image(model_input), self.image_size)))
        import pandas as pd

        if isinstance(model_input, pd.DataFrame) and "image" in model_input.columns:
            images = [colorize(self.G, decode_image(v), self.image_size) for v in model_input["image"]]
            return pd.DataFrame({"image": [encode_png(im) for im in images]})
        raise TypeError("colorray model input: an image array, or a table with a column 'image' of "
                        f"base64-encoded image files (got {type(model_input).__name__})")
