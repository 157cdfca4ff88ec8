"""The project's MLflow experiment as the MLflow UI shows it."""
from mlflow import MlflowClient

from colorray.tracking import EXPERIMENT, setup_mlflow


def test_the_experiment_opens_in_the_model_training_view(tmp_path, monkeypatch):
    """MLflow 3's UI opens an experiment without `mlflow.experimentKind` in its GenAI view:
    colorray's experiment is tagged as model training, whether it makes it or finds it."""
    monkeypatch.chdir(tmp_path)
    uri, exp_id = setup_mlflow(tmp_path)
    client = MlflowClient(uri)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"

    other = tmp_path / "older"  # a store whose experiment an older colorray made, untagged
    other.mkdir()
    old = MlflowClient(f"sqlite:///{other / 'mlflow.db'}")
    old_id = old.create_experiment(EXPERIMENT, artifact_location=(other / "mlruns").as_uri())
    assert "mlflow.experimentKind" not in old.get_experiment(old_id).tags
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set by the first setup_mlflow, as for a stage
    assert setup_mlflow(other)[1] == old_id
    assert old.get_experiment(old_id).tags["mlflow.experimentKind"] == "custom_model_development"
