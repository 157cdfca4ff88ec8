"""Typed, validated view of ``params.yaml``.

Config flows one way: params.yaml -> a frozen pydantic model here -> plain dicts into Ray
workers -> rebuilt there. Library code never reads params.yaml itself; stage scripts do.

Every mistake in params.yaml (unknown key, wrong type, out-of-range value) stops with a
:class:`ConfigError` that names the dotted key, what is wrong, and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SOURCE_NAMES = (
    "skimage",
    "folder",
    "tiny-imagenet",
    "places365",
    "coco2017",
    "celeba",
    "colorized-mnist",
)
SourceName = Literal[
    "skimage", "folder", "tiny-imagenet", "places365", "coco2017", "celeba", "colorized-mnist"
]
IMAGE_SIZES = (32, 64, 128, 256)


class ConfigError(ValueError):
    """A params file (or override) that does not describe a valid configuration."""


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default), and a
    # loaded config is immutable so no stage can change what DVC recorded.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    """The `data:` section: which dataset, and how the fetch and shard stages prepare it."""

    source: SourceName = "skimage"
    url: Optional[str] = None  # None: the source's official URL; file:// allowed
    sha256: Optional[str] = None  # None: the registry's checksum for the official URL, if known
    path: Optional[str] = None  # the image folder, for source=folder
    image_size: int = 64
    val_fraction: float = Field(0.05, ge=0.0, le=0.5)
    test_fraction: float = Field(0.05, ge=0.0, le=0.5)
    split_seed: str = "colorray"
    subset_fraction: float = Field(1.0, gt=0.0, le=1.0)
    categories: tuple[str, ...] = ("athletic_field/outdoor",)  # places365 only
    min_chroma: float = Field(0.0, ge=0.0, le=100.0)
    dataset_size: Optional[int] = Field(None, ge=1)
    chunk_size: int = Field(64, ge=1, le=4096)
    shard_max_mb: float = Field(16.0, gt=0.0, le=4096.0)
    max_extract_gb: float = Field(64.0, gt=0.0)

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if v not in IMAGE_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, IMAGE_SIZES))} (got {v})")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError(f"must be 64 hexadecimal characters (got {v!r})")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _consistent(self) -> "DataParams":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1")
        if self.source == "folder" and not self.path:
            raise ValueError("source 'folder' needs data.path: the folder of images to use")
        return self


class LoaderParams(_Section):
    """The `loader:` section: how shards are streamed into (L, ab) batches."""

    num_workers: int = Field(2, ge=0, le=64)
    shuffle_buffer: int = Field(2048, ge=0)  # samples mixed across chunks before batching


class Params(_Section):
    data: DataParams = DataParams()
    loader: LoaderParams = LoaderParams()


def _describe(err: dict, model: type[BaseModel]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = model
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part))
            parent = field.annotation if field is not None else parent
        allowed = ", ".join(parent.model_fields) if isinstance(parent, type) else "?"
        msg = f"unknown key (allowed here: {allowed})"
    elif "input" in err and err["type"] not in ("missing",):
        msg = f"{msg} (got {err['input']!r})" if "(got" not in msg else msg
    return f"{key}: {msg}"


def parse_params(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate a plain dict (as loaded from YAML) into :class:`Params`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, Params) for err in e.errors()]
        raise ConfigError(f"{origin}: invalid parameters:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, origin=str(path))
