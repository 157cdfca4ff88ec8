"""colorray: conditional GANs that colorize grayscale photographs (DVC, Ray, MLflow).

colorray's processes send nothing home: MLflow's usage telemetry is off in every process that
imports colorray (the CLI, the DVC stages, the Ray workers that run its training and sweeps),
unless MLFLOW_DISABLE_TELEMETRY is already set. MLflow reads the variable once, when it is first
imported, so it is set here, before any colorray module imports MLflow.
"""
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
