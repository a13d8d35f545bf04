"""MLflow, behind one resource: the tracking store, the model registry, run links.

Local: a SQLite store and an artifact folder under ASGARD_HOME (``mlflow ui`` on the same
store shows the runs). Scale: ``MLFLOW_TRACKING_URI`` pointing at an MLflow server.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import dagster as dg
from pydantic import PrivateAttr

from ..settings import asgard_home, embedded_mlflow_uri

EXPERIMENT = "operator_efficiency"
CHAMPION = "champion"
# MLflow retries an HTTP request 7 times with exponential backoff (~4 minutes) by default:
# an unreachable server must fail a step within a minute instead (3 tries of at most 15 s).
# Defaults only: an operator's own values win.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# a download's progress bar is tqdm's carriage-return redraws in every step's log
QUIET_SETTINGS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# how MLflow says "no such model" (404) and "no such alias" (400) on every store
NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str = ""
    ui_url: str = "http://127.0.0.1:5000"
    _ready: bool = PrivateAttr(default=False)

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return os.environ.get("MLFLOW_TRACKING_URI") or embedded_mlflow_uri()

    def client(self):
        import mlflow
        from mlflow import MlflowClient

        if not self._ready:
            for name, value in {**HTTP_SETTINGS, **QUIET_SETTINGS}.items():
                os.environ.setdefault(name, value)
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
        """The registered version holding the ``champion`` alias, or None when the model or
        the alias does not exist; an MLflow that cannot answer fails, naming its URI."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, CHAMPION)
        except MlflowException as e:
            if e.error_code in NOT_FOUND:
                return None
            uri = _without_password(self.uri())
            detail = e.message.replace(self.uri(), uri)  # MLflow's message repeats the URI
            raise dg.Failure(
                f"cannot ask MLflow at {uri} for the {CHAMPION} of {name}: {detail}",
                metadata={"mlflow": uri},
            ) from None  # MLflow's own error repeats the URI with its password

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id()}/runs/{run_id}"


def _without_password(uri: str) -> str:
    password = urlsplit(uri).password
    return uri.replace(f":{password}@", ":***@", 1) if password else uri
