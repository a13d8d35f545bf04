"""MLflow, behind one resource: the tracking store, the model registry, run links.

Local: a SQLite store and an artifact folder under ASGARD_HOME (``mlflow ui`` on the same
store shows the runs). Scale: ``MLFLOW_TRACKING_URI`` pointing at an MLflow server.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import PrivateAttr

from ..settings import asgard_home

EXPERIMENT = "operator_efficiency"
CHAMPION = "champion"


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = ""
    ui_url: str = "http://127.0.0.1:5000"
    _ready: bool = PrivateAttr(default=False)

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return (
            os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{asgard_home() / 'mlflow' / 'mlflow.db'}"
        )

    def client(self):
        import mlflow
        from mlflow import MlflowClient

        if not self._ready:
            (asgard_home() / "mlflow").mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.uri())
            mlflow.set_registry_uri(self.uri())
            self._ready = True
        return MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def experiment_id(self) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        artifacts = None if self.tracking_uri else (asgard_home() / "mlflow" / "artifacts").as_uri()
        return client.create_experiment(EXPERIMENT, artifact_location=artifacts)

    def champion(self, name: str):
        """The registered version holding the ``champion`` alias, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id()}/runs/{run_id}"
