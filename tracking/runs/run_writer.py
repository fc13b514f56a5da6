"""Sending one run's outbox operations (tracking/runs/outbox.py) to MLflow, failing fast when the server is away.

MLflow's client retries a refused connection inside one call for about four minutes (7 retries, backoff factor
2), so a trial whose server died sat in those retries and a grid stopped making progress. The tracker keeps
whatever failed in its outbox and tries again itself, so here each request is made once with short timeouts:
an unreachable server (refused, timed out, a 5xx or 429 answer) raises `ServerAway`; any other error answer is
a real error and raises MlflowException. Requests go through MLflow's own `http_request`, so its credentials
(MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN) and TLS settings apply as they do to the client.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import InvalidUrlException, MlflowException
from mlflow.protos.service_pb2 import LogBatch, UpdateRun
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.proto_json_utils import message_to_json
from mlflow.utils.rest_utils import http_request, verify_rest_response

TIMEOUT_S = 30  # one request; a batch of 1000 metrics takes milliseconds on a live server
ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"


# Answers that say the server is overloaded for now, not that the request is wrong, though MLflow sends them as 400
# BAD_REQUEST: its database connection pool stayed exhausted for 30 s (SQLAlchemy's pool timeout; a PostgreSQL
# server under many trials at once; the home's SQLite server has no pool: tracking/server/process.py).
BUSY_ANSWERS = ("QueuePool limit",)


class ServerAway(ConnectionError):
    """The tracking server did not answer (or answered that it cannot serve now); try again later."""


class RunWriter:
    """Sends operations of run `run_id` to the server behind `client`."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str) -> None:
        self.client, self.run_id, self.artifact_uri = client, run_id, artifact_uri
        uri = client.tracking_uri
        self._http = uri.startswith(("http://", "https://"))
        self._creds = get_default_host_creds(uri) if self._http else None

    def send(self, op: dict) -> None:
        if op["op"] == "batch":
            self._batch(op)
        elif op["op"] == "status":
            self._status(op)
        elif op["op"] == "artifact":
            self._artifact(Path(op["path"]), op.get("dir"))
        else:
            raise ValueError(f"unknown outbox operation {op['op']!r}")

    def _batch(self, op: dict) -> None:
        metrics = [Metric(key, float(value), int(ts), int(step)) for key, value, ts, step in op["metrics"]]
        params = [Param(key, value) for key, value in op["params"]]
        tags = [RunTag(key, value) for key, value in op["tags"]]
        if not self._http:
            self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)
            return
        body = LogBatch(
            run_id=self.run_id,
            metrics=[m.to_proto() for m in metrics],
            params=[p.to_proto() for p in params],
            tags=[t.to_proto() for t in tags],
        )
        self._request("/api/2.0/mlflow/runs/log-batch", "POST", json_body=message_to_json(body))

    def _status(self, op: dict) -> None:
        status, end_time = op["status"], op.get("end_time")
        if not self._http:
            if end_time is None:
                self.client.update_run(self.run_id, status=status)
            else:
                self.client.set_terminated(self.run_id, status=status, end_time=end_time)
            return
        body = UpdateRun(run_id=self.run_id, status=RunStatus.from_string(status))
        if end_time is not None:
            body.end_time = int(end_time)
        self._request("/api/2.0/mlflow/runs/update", "POST", json_body=message_to_json(body))

    def _artifact(self, local: Path, artifact_dir: str | None) -> None:
        proxied = self.artifact_uri.startswith("mlflow-artifacts:")
        if not (self._http and proxied):
            self.client.log_artifact(self.run_id, str(local), artifact_dir)
            return
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        root = self.artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        for path in files:
            inner = path.relative_to(local).parent.as_posix() if local.is_dir() else ""
            parts = [part for part in (root, artifact_dir, inner if inner != "." else "", path.name) if part]
            with path.open("rb") as data:
                self._request(posixpath.join(ARTIFACTS_ROUTE, *parts), "PUT", data=data)

    def _request(self, endpoint: str, method: str, *, json_body: str | None = None, data=None) -> None:
        try:
            response = http_request(
                self._creds,
                endpoint,
                method,
                max_retries=0,
                backoff_factor=0,
                retry_codes=(),
                timeout=TIMEOUT_S,
                raise_on_status=False,
                **({"json": json.loads(json_body)} if json_body is not None else {"data": data}),
            )
        except InvalidUrlException:
            raise
        except MlflowException as error:  # connection refused, reset or timed out (the client's wording)
            raise ServerAway(str(error)) from error
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerAway(f"{method} {endpoint}: HTTP {response.status_code}")
        if response.status_code == 400 and any(answer in response.text for answer in BUSY_ANSWERS):
            raise ServerAway(f"{method} {endpoint}: HTTP 400, the server is busy: {response.text[:200]}")
        verify_rest_response(response, endpoint)
