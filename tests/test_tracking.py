"""The project's MLflow experiment as the MLflow UI shows it."""
import os

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


def test_mlflow_telemetry_is_off_in_colorray_processes_unless_the_user_chose():
    """colorray/__init__.py sets MLFLOW_DISABLE_TELEMETRY before MLflow is imported (MLflow
    reads it once, on import): in the CLI, the stages and the Ray workers that run colorray's
    code, none of which is given the variable by Ray any more. A value the user set stays."""
    import subprocess
    import sys

    code = ("import colorray, mlflow, os; from mlflow.telemetry.utils import is_telemetry_disabled; "
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], is_telemetry_disabled())")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["true", "True"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "false"
