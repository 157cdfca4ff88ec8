"""Typed, validated view of ``params.yaml``.

Config flows one way: params.yaml -> a frozen pydantic model here -> plain dicts into Ray
workers -> rebuilt there. Library code never reads params.yaml itself; stage scripts do.

Every mistake in params.yaml (unknown key, wrong type, out-of-range value) stops with a
:class:`ConfigError` that names the dotted key, what is wrong, and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from colorray.presets import PRESETS

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


class UserError(Exception):
    """Input or surroundings the user must fix (a download that fails, a bad checksum): the
    command line prints its message in one line, no traceback, and exits 2."""


class ConfigError(ValueError):
    """A params file (or override) that does not describe a valid configuration."""


def run_digest(params: Params, *parts: bytes) -> str:
    """sha256 (hex) of the resolved parameters, `parts`, and every colorray source file: what
    makes a run the same run (the sweep a re-run continues, the training an interrupted train
    stage continues)."""
    h = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode())
    for part in parts:
        h.update(part)
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def tuned_params(path: str | Path, best: Path | None) -> "Params":
    """params.yaml with the sweep's winner (tune/best_params.yaml) applied over it when that
    file exists: the parameters of the train, baseline and evaluate stages."""
    return load_params(path, best if best and best.exists() else None)


class StageInterrupted(RuntimeError):
    """A stage stopped before its work was done (Ctrl-C): nothing was written, and running
    it again continues where it stopped. The command line exits 130."""


# The default of every key, as data (see the file's header): read once, never written.
DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
DEFAULTS: dict = yaml.safe_load(DEFAULTS_FILE.read_text())


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default), and a
    # loaded config is immutable so no stage can change what DVC recorded.
    model_config = ConfigDict(extra="forbid", frozen=True)
    section: ClassVar[str] = ""  # its name in params.yaml and defaults.yaml

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, given: Any) -> Any:
        """Keys the input leaves out take their value from defaults.yaml."""
        if cls.section and isinstance(given, dict):
            return {**DEFAULTS[cls.section], **given}
        return given


class DataParams(_Section):
    """The `data:` section: which dataset, and how the fetch and shard stages prepare it."""

    section: ClassVar[str] = "data"

    source: SourceName
    url: Optional[str]  # None: the source's official URL; file:// allowed
    sha256: Optional[str]  # None: the registry's checksum for the official URL, if known
    path: Optional[str]  # the image folder, for source=folder
    image_size: int
    val_fraction: float = Field(ge=0.0, le=0.5)
    test_fraction: float = Field(ge=0.0, le=0.5)
    split_seed: str
    subset_fraction: float = Field(gt=0.0, le=1.0)
    categories: tuple[str, ...]  # places365 only
    min_chroma: float = Field(ge=0.0, le=100.0)
    dataset_size: Optional[int] = Field(ge=1)
    encoding: Literal["jpeg", "webp", "png", "raw"]  # how the shard stage stores each image
    jpeg_quality: int = Field(ge=1, le=100)
    compression: Literal["gzip", "none"]  # of the shard tars
    chunk_size: int = Field(ge=1, le=4096)  # raw only: images per record
    shard_max_mb: float = Field(gt=0.0, le=4096.0)
    shards_url: Optional[str]  # None: the shard stage's folder; else where training reads them
    max_extract_gb: float = Field(gt=0.0)
    max_download_bytes: int = Field(gt=0)  # a download stops with an error past this size

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


NormName = Literal["batch", "instance", "layer", "none"]


class ModelParams(_Section):
    """The `model:` section: generator and discriminator architecture."""

    section: ClassVar[str] = "model"

    generator: Literal["unet", "zhang"]
    g_depth: Optional[int] = Field(ge=2, le=8)  # None: down to 1x1 (log2 of image_size)
    g_channels: int = Field(ge=4, le=1024)  # first encoder width (Zhang: base width)
    g_channels_max: int = Field(ge=4, le=4096)
    g_norm: NormName
    g_dropout: float = Field(ge=0.0, lt=1.0)
    g_dropout_blocks: tuple[int, ...]  # decoder blocks, 0 = innermost (pix2pix)
    g_skip_norm: bool  # learned-affine instance norm on the skips (study 001)
    g_down: Literal["conv", "maxpool"]
    g_up: Literal["transpose", "bilinear", "pixeltcl"]
    g_in_channels: Literal[1, 3]  # 3: L repeated, as study 000
    # The generator's ab output (after tanh) times this. Below 1 it pales the colors: where a
    # GAN's vivid colors are often wrong, paler ones cost less fidelity (base/calibrate.py picks
    # the shipped base model's on its val split). Not a weight: changing it needs no training.
    # None: 1, or the starting model's gain when training starts from one (train.init_from).
    chroma_gain: Optional[float] = Field(gt=0.0, le=4.0)
    discriminator: Literal["patch", "dcgan", "resnet18", "resnet34", "resnet50", "resnet152",
                           "autoencoder"]
    d_channels: int = Field(ge=4, le=1024)
    d_layers: Optional[tuple[tuple[int, int, int], ...]]  # PatchGAN (channels, stride, padding)
    d_norm: NormName
    init_std: float = Field(gt=0.0, le=1.0)


class GanParams(_Section):
    """The `gan:` section: objective, loss weights and stabilizers."""

    section: ClassVar[str] = "gan"

    objective: Literal["vanilla", "lsgan", "wgan", "wgan-gp", "ebgan", "softplus", "hinge"]
    adv_weight: float = Field(ge=0.0)  # lambda_1; 0 trains no discriminator
    l1_weight: float = Field(ge=0.0)  # lambda_2 (pix2pix lambda)
    l2_weight: float = Field(ge=0.0)  # lambda_3
    huber_weight: float = Field(ge=0.0)
    gp_weight: Optional[float] = Field(ge=0.0)  # None: the objective's (10 for wgan-gp)
    gp_target: Literal["interpolate", "smoothed_fake"]
    r1_gamma: float = Field(ge=0.0)
    r1_interval: int = Field(ge=1)  # lazy R1: every k critic steps, weighted by k
    clip: float = Field(gt=0.0)  # wgan weight clipping
    n_critic: Optional[int] = Field(ge=1, le=100)  # None: the objective's (5 for WGANs)
    ebgan_margin: float = Field(gt=0.0)
    instance_noise: float = Field(ge=0.0)  # initial std on D's ab inputs
    instance_noise_iters: int = Field(ge=0)  # linear decay to 0 over this many; 0: constant
    instance_smoothing: float = Field(ge=0.0, le=1.0)  # initial beta_s (study 001: 0.5)
    instance_smoothing_iters: int = Field(ge=0)
    label_smoothing: float = Field(ge=0.0, lt=0.5)  # vanilla: real target 1 - eps
    pretrain_iters: int = Field(ge=0)  # reconstruction-only iterations first (study 002)

    @model_validator(mode="after")
    def _some_loss(self) -> "GanParams":
        if self.adv_weight == 0 and self.l1_weight == self.l2_weight == self.huber_weight == 0:
            raise ValueError("every loss weight is 0: set gan.adv_weight or a reconstruction weight")
        return self


class TrainParams(_Section):
    """The `train:` section: optimisation and the step loop."""

    section: ClassVar[str] = "train"

    batch_size: int = Field(ge=1, le=65536)
    iters: int = Field(ge=1)  # generator steps
    optimizer: Optional[Literal["adam", "rmsprop", "sgd"]]  # None: the objective's
    lr_g: Optional[float] = Field(gt=0.0, le=1.0)
    lr_d: Optional[float] = Field(gt=0.0, le=1.0)
    betas_g: Optional[tuple[float, float]]
    betas_d: Optional[tuple[float, float]]
    lr_schedule: Literal["constant", "linear", "cosine"]
    lr_decay_start: float = Field(ge=0.0, lt=1.0)  # linear: fraction of iters at full lr
    # auto: the fastest mode this device supports, measured once per device, architecture and
    # batch and cached (colorray.precision); an explicit value is used as it is.
    amp: Literal["auto", "none", "bf16", "fp16"]
    channels_last: Union[Literal["auto"], bool]
    compile: bool  # torch.compile the forward passes (penalties stay eager)
    sync_batchnorm: bool  # BatchNorm statistics over all workers (SyncBatchNorm)
    seed: int
    checkpoint_every: int = Field(ge=1)
    resume: bool  # continue the run in models/checkpoint.pt (e.g. with more iters)
    # Start from a model's weights (fine-tuning): a generator file, a training checkpoint, or an
    # MLflow model URI; resolved by the init stage (colorray.train.init_from).
    init_from: Optional[str]

    @field_validator("init_from")
    @classmethod
    def _init_from(cls, v):
        if v is not None and not v.strip():
            raise ValueError("an empty string; use null for random weights")
        if v is not None and v.startswith("runs:/"):
            raise ValueError(f"{v}: runs:/ URIs are deprecated in MLflow 3; name the run's model as "
                             "models:/<model_id> (or a registered models:/<name>@<alias> / <name>/<version>)")
        if v is not None and ":/" in v and not v.startswith("models:/"):
            raise ValueError(f"{v}: not a file path or an MLflow models:/ URI")
        return v

    @field_validator("betas_g", "betas_d")
    @classmethod
    def _betas(cls, v):
        if v is not None and not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"both betas must lie in [0, 1) (got {list(v)})")
        return v


class RayParams(_Section):
    """The `ray:` section: how the train stage runs on Ray Train."""

    section: ClassVar[str] = "ray"

    num_workers: int = Field(ge=1, le=4096)  # data-parallel training processes
    use_gpu: bool
    cpus_per_worker: float = Field(gt=0.0)  # also the torch threads of each worker
    gpus_per_worker: float = Field(gt=0.0)
    storage_path: Optional[str]  # null: <project>/ray_results; a cluster needs shared storage
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
    max_failures: int = Field(ge=-1)  # worker-group restarts from the last checkpoint (-1: forever)
    report_every: int = Field(ge=1)  # iterations between ray.train.report / MLflow metrics
    eval_every: int = Field(ge=1)  # iterations between val metrics and sample grids


class LoaderParams(_Section):
    """The `loader:` section: how shards are streamed into (L, ab) batches."""

    section: ClassVar[str] = "loader"

    num_workers: int = Field(ge=0, le=64)
    shuffle_buffer: int = Field(ge=0)  # samples mixed across chunks before batching
    flip: bool  # training batches: each image mirrored left-right with probability 1/2


class MetricsParams(_Section):
    """The `metrics:` section: where the weights of weight-based metrics are, and how many val
    images the val metrics of training and sweeps measure."""

    section: ClassVar[str] = "metrics"

    fid_weights: Optional[str]  # null: $TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth
    val_images: int = Field(ge=1)  # the first N of the val split (always the same ones), each val evaluation


class TuneParams(_Section):
    """The `tune:` section: the Ray Tune sweep whose winner the train stage uses.

    `space` maps dotted parameter keys to one distribution each; colorray.sweep.space checks
    every knob against the parameter rules before any trial starts."""

    section: ClassVar[str] = "tune"

    enabled: bool
    metric: Literal["auto", "val/fid", "val/delta_cf", "val/l1"]  # auto: fid if weights, else delta_cf
    search: Literal["optuna", "random", "grid"]
    scheduler: Literal["asha", "sha", "none"]  # sha: synchronous successive halving
    num_samples: int = Field(ge=1, le=100000)  # trials (grid: every point once, this is ignored)
    max_concurrent_trials: int = Field(ge=1)
    iters: int = Field(ge=1)  # generator iterations of a trial that is never stopped
    report_every: int = Field(ge=1)  # val metrics + ASHA decision every N iterations
    grace_iters: int = Field(ge=1)  # ASHA / SHA: the first rung; no trial stops before it
    reduction_factor: float = Field(gt=1.0)  # ASHA / SHA: 1/rf of the trials go on at each rung
    seed: int  # the search algorithm's seed
    num_workers: int = Field(ge=1)  # workers per trial (1: in the trial's own process; more: a Ray Train run)
    cpus_per_worker: float = Field(gt=0.0)
    gpus_per_worker: float = Field(ge=0.0)  # > 0: trials train on GPUs
    space: dict[str, Any]

    @model_validator(mode="after")
    def _consistent(self) -> "TuneParams":
        if self.grace_iters > self.iters:
            raise ValueError(f"tune.grace_iters={self.grace_iters} exceeds tune.iters={self.iters}")
        return self


class ClassifierParams(_Section):
    """The `classifier:` section: study 002's classifier metrics (colorray.metrics.classifier).
    The same recipe trains the real-image classifier and, in the evaluate stage, one classifier
    per model on its colorized training images (Omega compares their weights)."""

    section: ClassVar[str] = "classifier"

    epochs: int = Field(ge=1)  # study 002: 2 epochs, batch 128
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    width: int = Field(ge=4)  # first conv width of the small CNN
    seed: int
    max_train_images: Optional[int] = Field(ge=2)  # null: the whole training split


class EvaluateParams(_Section):
    """The `evaluate:` section: the final stage, which measures the trained GAN next to the
    gray and reconstruction-only baselines on the test split and registers the winner."""

    section: ClassVar[str] = "evaluate"

    select_by: Literal["auto", "fid", "lpips", "delta_cf", "ssim", "psnr", "psnr_ab", "uiqi", "l1",
                       "cim", "accuracy", "omega"]  # auto: fid if its weights exist, else delta_cf
    max_images: Optional[int] = Field(ge=2)  # test images measured (null: all)
    grid_images: int = Field(ge=1)  # rows of eval/samples.png
    diversity_images: int = Field(ge=1)  # rows of eval/diversity.png
    diversity_samples: int = Field(ge=2)  # colorizations per row, dropout on
    register_model: bool  # register the winner as models:/colorray@champion
    # Promotion needs fidelity too: a candidate may lose at most this much to leaving the photos
    # gray (None: no such test).
    max_psnr_loss_db: Optional[float] = Field(ge=0.0)
    max_ssim_loss: Optional[float] = Field(ge=0.0, le=1.0)


class Params(_Section):
    preset: Optional[str] = None
    data: DataParams = Field(default_factory=DataParams)
    loader: LoaderParams = Field(default_factory=LoaderParams)
    model: ModelParams = Field(default_factory=ModelParams)
    gan: GanParams = Field(default_factory=GanParams)
    train: TrainParams = Field(default_factory=TrainParams)
    ray: RayParams = Field(default_factory=RayParams)
    metrics: MetricsParams = Field(default_factory=MetricsParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    classifier: ClassifierParams = Field(default_factory=ClassifierParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        if self.train.batch_size % self.ray.num_workers:
            raise ValueError(f"train.batch_size={self.train.batch_size} is the global batch: it must "
                             f"divide evenly over ray.num_workers={self.ray.num_workers}")
        if self.gan.gp_weight and self.model.d_norm == "batch" and self.model.discriminator != "autoencoder":
            raise ValueError("model.d_norm=batch cannot be used with a gradient penalty "
                             f"(gan.gp_weight={self.gan.gp_weight}): BatchNorm couples the samples "
                             "the penalty treats as independent; use instance, layer or none")
        if self.gan.objective == "ebgan" and self.model.discriminator != "autoencoder" and self.gan.adv_weight > 0:
            raise ValueError("gan.objective=ebgan needs model.discriminator=autoencoder")
        if self.model.g_depth and 2**self.model.g_depth > self.data.image_size:
            raise ValueError(f"model.g_depth={self.model.g_depth} halves {self.data.image_size}-px "
                             f"images below 1 pixel: at most {int(math.log2(self.data.image_size))}")
        if self.model.discriminator == "autoencoder" and self.gan.objective != "ebgan":
            raise ValueError("model.discriminator=autoencoder returns energies: use gan.objective=ebgan")
        return self

    def generator_gain(self) -> float:
        """model.chroma_gain, 1 when unset (a run from train.init_from inherits the starting
        model's gain before its generator is built: colorray.train.init_from.inherit)."""
        return 1.0 if self.model.chroma_gain is None else self.model.chroma_gain

    def generator_depth(self) -> int:
        """U-Net depth: model.g_depth, or as many halvings as the image size allows."""
        return self.model.g_depth or int(math.log2(self.data.image_size))


# Sections whose keys may be null in params.yaml: null means "the preset's value, else the
# objective's default, else the built-in default", so an explicit value always wins.
PRESETTABLE = ("model", "gan", "train")


def objective_defaults(objective: str) -> dict:
    """The defaults an objective brings (defaults.yaml `objectives:`), by section."""
    d = DEFAULTS["objectives"][objective]
    t = d["train"]
    return {"model": dict(d.get("model", {})), "gan": dict(d["gan"]),
            "train": {"optimizer": t["optimizer"], "lr_g": t["lr"], "lr_d": t["lr"],
                      "betas_g": t["betas"], "betas_d": t["betas"]}}


def _resolve(raw: dict) -> dict:
    """Merge built-in < objective < preset < explicit for the presettable sections."""
    out = dict(raw)
    name = raw.get("preset")
    if name is not None and name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    preset = PRESETS[name] if name else {}
    merged = {}
    for section in PRESETTABLE:
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section}: expected a mapping, got {type(given).__name__}")
        fields = Params.model_fields[section].annotation.model_fields
        unknown = [k for k in given if k not in fields]
        if unknown:
            raise ConfigError(f"{section}.{unknown[0]}: unknown key (allowed here: {', '.join(fields)})")
        merged[section] = {**preset.get(section, {}), **{k: v for k, v in given.items() if v is not None}}
    objective = merged["gan"].get("objective", DEFAULTS["gan"]["objective"])
    if objective in DEFAULTS["objectives"]:
        for section, values in objective_defaults(objective).items():
            for k, v in values.items():
                merged[section].setdefault(k, v)
    out.update(merged)
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"lr_g": 1e-4}} -> {"train.lr_g": 1e-4}: the dotted keys DVC and MLflow use."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _describe(err: dict, model: type[BaseModel]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a cross-section rule: its message names the keys itself
        return msg
    key = ".".join(str(p) for p in err["loc"])
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
        return Params.model_validate(_resolve(raw))
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    except ValidationError as e:
        lines = [_describe(err, Params) for err in e.errors()]
        raise ConfigError(f"{origin}: invalid parameters:\n  " + "\n  ".join(lines)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def overlay(raw: dict, extra: Any, origin: str) -> dict:
    """params.yaml with the sections of `extra` (e.g. tune/best_params.yaml) merged over it."""
    if extra is None:
        return raw
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise ConfigError(f"{origin}: expected sections of keys, e.g. {{gan: {{l1_weight: 100}}}}")
    out = dict(raw or {})
    for section, values in extra.items():
        out[section] = {**(out.get(section) or {}), **values}
    return out


def load_params(path: str | Path = "params.yaml", overrides: str | Path | None = None) -> Params:
    """params.yaml, validated; with `overrides` (a YAML file of sections) applied over it."""
    raw = read_yaml(path)
    origin = str(path)
    if overrides is not None:
        raw = overlay(raw, read_yaml(overrides), str(overrides))
        origin = f"{path} with {overrides}"
    return parse_params(raw, origin=origin)
