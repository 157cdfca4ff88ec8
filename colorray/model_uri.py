"""Model references: a weights file on disk, or an MLflow model URI resolved to the weights file
it holds and to what it named.

MLflow URIs, the MLflow 3 forms: `models:/<name>@<alias>` (`models:/colorray@champion`),
`models:/<name>/<version>`, `models:/<model_id>` (a LoggedModel, `m-...`). `runs:/<run>/<path>`
(deprecated by MLflow 3) still loads. An alias is resolved once (`describe`) and the concrete
version is downloaded, so the weights and the record of what they are always agree even if
somebody moves the alias meanwhile.

Nothing from the tracking server is executed or unpickled: the model folder is downloaded as
files, its MLmodel is read as YAML, and the file its `generator` artifact names is returned, to
be read with torch.load(weights_only=True). A model without that artifact (a pickled pyfunc or
PyTorch model) is refused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


BASE_MODEL = "builtin:base"  # the colorizer that ships inside the package (colorray/weights/)
BASE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "base.pt"


def default_tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store in the project (absolute: Ray workers
    run in other folders). Here, not in colorray.tracking: the init stage resolves a built-in
    or file reference on every `dvc repro` and need not import MLflow for it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def is_mlflow_uri(ref: str) -> bool:
    return ref.startswith(("models:/", "runs:/"))


def builtin_weights(ref: str, what: str = "--model") -> Path:
    """The file of a model that ships with colorray (`builtin:base`), or a clear error."""
    if ref != BASE_MODEL:
        raise ValueError(f"{what} {ref}: unknown built-in model; the one colorray ships is {BASE_MODEL}")
    if not BASE_WEIGHTS.is_file():
        raise FileNotFoundError(f"{what} {ref}: this installation has no {BASE_WEIGHTS} (a source checkout "
                                "without it, or a build that left package data out); reinstall colorray, or "
                                "pass another model: a generator .pt or models:/colorray@champion")
    return BASE_WEIGHTS


@contextlib.contextmanager
def mlflow_tracking(uri: str | None):
    """MLflow's tracking URI for one block. mlflow.set_tracking_uri also exports
    MLFLOW_TRACKING_URI, which code later in the same process (colorray's stages called as
    functions, tests) would take for the user's own choice: both are put back afterwards."""
    import mlflow

    if uri is None:
        yield
        return
    env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def describe(ref: str, tracking_uri: str | None = None, what: str = "--model") -> dict:
    """What an MLflow URI names now: {"uri", "model_id", "registered_name", "version", "alias",
    "run_id", "resolved_uri"} (None where it does not apply). resolved_uri is the concrete
    model (`models:/<model_id>`, or the version for a registered model logged before MLflow 3)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    info = {"uri": ref, "model_id": None, "registered_name": None, "version": None, "alias": None,
            "run_id": None, "resolved_uri": ref}
    if ref.startswith("runs:/"):
        info["run_id"] = ref[len("runs:/"):].split("/")[0]
        return info
    if not ref.startswith("models:/"):
        raise ValueError(f"{what} {ref}: not an MLflow model URI (models:/<name>@<alias>, models:/<name>/<version> "
                         "or models:/<model_id>)")
    body = ref[len("models:/"):].rstrip("/")
    with mlflow_tracking(tracking_uri):
        client = MlflowClient()
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                info.update(registered_name=name, alias=alias)
            elif "/" in body:
                name, version = body.split("/", 1)
                mv = client.get_model_version(name, version)
                info.update(registered_name=name)
            else:
                model = client.get_logged_model(body)
                info.update(model_id=model.model_id, run_id=model.source_run_id,
                            resolved_uri=f"models:/{model.model_id}")
                return info
        except MlflowException as e:
            raise ValueError(f"{what} {ref}: not found in MLflow at {client.tracking_uri} ({e.message})") from None
    # A version registered from a LoggedModel names it as its source (models:/m-...); the
    # sqlite store leaves ModelVersion.model_id empty.
    source = str(mv.source or "")
    model_id = mv.model_id or (source[len("models:/"):] if source.startswith("models:/m-") else None)
    info.update(version=int(mv.version), run_id=mv.run_id, model_id=model_id,
                resolved_uri=f"models:/{model_id}" if model_id else f"models:/{mv.name}/{mv.version}")
    return info


def download_weights(ref: str, dst: Path, tracking_uri: str | None = None, what: str = "--model") -> Path:
    """The generator weights file of an MLflow model (or artifact) URI, downloaded into `dst`."""
    import mlflow
    import yaml

    with mlflow_tracking(tracking_uri):
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dst)))
        except Exception as e:  # MlflowException: no such model, alias, run or artifact
            raise ValueError(f"{what} {ref}: cannot download it from MLflow at {mlflow.get_tracking_uri()} "
                             f"({e})") from None
    if local.is_file():  # an artifact URI of the generator file itself
        return local
    try:
        conf = yaml.safe_load((local / "MLmodel").read_text())
        artifact = conf["flavors"]["python_function"]["artifacts"]["generator"]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise ValueError(f"{what} {ref}: not a colorray colorizer (no MLmodel naming a 'generator' weights "
                         "artifact). colorray loads weights only, never a pickled model.") from None
    path = (local / str(artifact)).resolve()
    if not path.is_relative_to(local.resolve()) or not path.is_file():
        raise ValueError(f"{what} {ref}: its generator artifact {artifact!r} is not a file inside the model")
    return path
