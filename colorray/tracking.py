"""MLflow in one place: the tracking store, the project's experiment, a run's parameters and
the tags of the mode it computed in. Model logging is in colorray.pyfunc; the registry (the
champion alias) in colorray.evaluate."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param

from colorray.data.storage import location, read_bytes
from colorray.model_uri import default_tracking_uri
from colorray.redact import redact
from colorray.config import Params, flatten

EXPERIMENT = "colorray"
PRECISION_TAG = "colorray.precision."  # MLflow tags of the mode the run computed in


# The MLflow UI (3.x) opens an experiment without this tag in its GenAI view (traces, prompts);
# this one is model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client, root: Path) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        # Artifacts next to the store, by absolute URI: workers log from other folders.
        return client.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").resolve().as_uri(),
                                        tags=EXPERIMENT_KIND)
    if any(exp.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):  # made by an older colorray
        for k, v in EXPERIMENT_KIND.items():
            client.set_experiment_tag(exp.experiment_id, k, v)
    return exp.experiment_id


def setup_mlflow(root: Path) -> tuple[str, str]:
    """Tracking URI and the project's experiment id (created on first use)."""
    tracking_uri = default_tracking_uri(root)
    mlflow.set_tracking_uri(tracking_uri)
    return tracking_uri, _experiment_id(MlflowClient(tracking_uri), root)


def log_params(client, run_id: str, params: Params) -> None:
    """Every parameter, as the run's params, with credentials in URLs and pipe: commands
    redacted (colorray.redact): the MLflow store is read by everyone who can open the UI."""
    items = [Param(k, str(redact(v))) for k, v in flatten(params.model_dump(mode="json")).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def run_precision(client, run_id: str) -> dict:
    """The mode a run computed in, as its rank 0 tagged it (precision.tags()), with the tags'
    strings read back as numbers and booleans (dvc metrics shows and compares those)."""
    def value(text: str):
        if text in ("True", "False"):
            return text == "True"
        try:
            return float(text)
        except ValueError:
            return text

    tags = client.get_run(run_id).data.tags
    return {k[len(PRECISION_TAG):]: value(v) for k, v in tags.items() if k.startswith(PRECISION_TAG)}


def run_name(stage: str, params: Params, parent: dict | None = None) -> str:
    """A run's name in the runs table: the stage, the objective and the knobs a sweep turns,
    and the model it started from (train.init_from), e.g. `train wgan λ=76.3 clip=0.0425 b=8`."""
    g, t = params.gan, params.train
    knobs = [g.objective, f"λ={g.l1_weight:.3g}"]
    if g.objective == "wgan":
        knobs.append(f"clip={g.clip:.3g}")
    if g.n_critic > 1:
        knobs.append(f"n_critic={g.n_critic}")
    knobs.append(f"b={t.batch_size}")
    if params.data.dataset_size:
        knobs.append(f"n={params.data.dataset_size}")
    if parent and parent.get("init_from"):
        knobs.append("from " + (f"{parent['registered_name']} v{parent['version']}" if parent.get("version")
                                else parent.get("model_id") or Path(str(parent["init_from"])).name))
    return " ".join([stage, *knobs])


def shards_dataset(shards: str | Path):
    """The shards as an MLflow dataset: source their folder (or URL), digest their manifest's
    sha256 (the evaluate stage's data.manifest_sha256), named after the data source, so the
    runs table tells runs on different data apart."""
    import hashlib
    import json
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.exceptions import MlflowException

    loc = location(shards)
    manifest = read_bytes(loc, "manifest.json")
    with warnings.catch_warnings():  # MLflow registers the local-file source twice and says so
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        try:  # a folder, https://, s3://, gs://
            source = resolve_dataset_source(redact(loc))
        except MlflowException:  # pipe:<command>: MLflow has no source type for it
            source = CodeDatasetSource(tags={"location": redact(loc)})
    return MetaDataset(source, name=f"{json.loads(manifest).get('source', 'data')} shards",
                       digest=hashlib.sha256(manifest).hexdigest()[:16])


def log_shards(shards: str | Path, context: str, client=None, run_id: str | None = None) -> None:
    """Record the shards as a dataset input for `context` (train / test) of the active run, or
    of `run_id` through `client`."""
    if run_id is None:
        mlflow.log_input(shards_dataset(shards), context=context)
        return
    from mlflow.entities import DatasetInput, InputTag

    tag = InputTag("mlflow.data.context", context)
    client.log_inputs(run_id, datasets=[DatasetInput(shards_dataset(shards)._to_mlflow_entity(), tags=[tag])])
