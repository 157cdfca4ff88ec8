"""The code of colorray's MLflow model (models from code): MLflow runs this file to build the
model, then calls its load_context with the generator weights file. See colorray/pyfunc.py."""

import mlflow

from colorray.pyfunc import ColorizerModel

mlflow.models.set_model(ColorizerModel())
