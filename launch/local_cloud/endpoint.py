"""A Vertex AI endpoint serving one model, on this machine: the UploadModel request's serving
container, and the PredictRequests `python -m launch predict` sends it.

Implemented, after cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements:
- The container runs its image's ENTRYPOINT, read from the Dockerfile that builds the image
  (containers/<image name>.Dockerfile; `python` is this interpreter), or the container spec's
  command and args when it has them.
- Its environment: AIP_HTTP_PORT (the spec's first port; here a free local port, so that
  several can run), AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE (the spec's routes), AIP_STORAGE_URI
  (Vertex AI copies the model's artifactUri to storage of its own and points at the copy; here
  a copied local folder), AIP_MODE=PREDICTION, AIP_DEPLOYED_MODEL_ID, and the spec's env.
- Traffic starts once the health route answers 200.
- A prediction is the body {"instances": [...]} POSTed to the predict route; a body over 1.5 MB
  is refused before it reaches the container, as Vertex AI refuses online prediction requests
  over that size (cloud.google.com/vertex-ai/docs/quotas).
Not implemented: machines and autoscaling, several deployed models and traffic splits,
explanations, rawPredict, authentication, private endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from launch.local_cloud.buckets import LocalBuckets
from launch.local_cloud.custom_job import CREDENTIAL_VARIABLES, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_REQUEST_BYTES = 1_572_864  # 1.5 MB
DEPLOYED_MODEL_ID = "1"


def image_entrypoint(image_uri: str) -> list[str]:
    """The exec-form ENTRYPOINT of containers/<name>.Dockerfile for REGISTRY/.../<name>:TAG."""
    name = image_uri.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    dockerfile = REPO_ROOT / "containers" / f"{name}.Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return json.loads(line.removeprefix("ENTRYPOINT "))
    raise ValueError(f"{dockerfile} has no exec-form ENTRYPOINT")


class LocalEndpoint:
    """start() runs the serving container; predict(request=...) is a PredictionServiceClient's
    predict; stop() ends it."""

    def __init__(self, upload: aiplatform_v1.UploadModelRequest, buckets: LocalBuckets,
                 work_dir: Path, base_env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        model = upload.model
        spec = model.container_spec
        self.port = free_port()
        self.health_url = f"http://127.0.0.1:{self.port}{spec.health_route}"
        self.predict_url = f"http://127.0.0.1:{self.port}{spec.predict_route}"
        copy = work_dir / "model_copy"  # Vertex AI serves a copy of the artifact, not it
        shutil.copytree(buckets.path(model.artifact_uri), copy)
        command = (list(spec.command) + list(spec.args)) or image_entrypoint(spec.image_uri)
        self.command = [sys.executable if part == "python" else part for part in command]
        env = {k: v for k, v in (base_env if base_env is not None else os.environ).items()
               if k not in CREDENTIAL_VARIABLES and not k.startswith("AIP_")}
        env.update({"AIP_HTTP_PORT": str(self.port), "AIP_HEALTH_ROUTE": spec.health_route,
                    "AIP_PREDICT_ROUTE": spec.predict_route, "AIP_STORAGE_URI": str(copy),
                    "AIP_MODE": "PREDICTION", "AIP_DEPLOYED_MODEL_ID": DEPLOYED_MODEL_ID})
        env.update({e.name: e.value for e in spec.env})
        self.env, self.cwd, self.log_path = env, cwd, work_dir / "serving_container.log"
        self.requests: list[aiplatform_v1.PredictRequest] = []

    def start(self, timeout: float = 300) -> None:
        """Starts the container and returns once its health route answers 200."""
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the serving container did not become healthy:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def predict(self, *, request: aiplatform_v1.PredictRequest) -> aiplatform_v1.PredictResponse:
        self.requests.append(request)
        message = json_format.MessageToDict(aiplatform_v1.PredictRequest.pb(request))
        body = json.dumps({key: message[key] for key in ("instances", "parameters")
                           if key in message}).encode()
        if len(body) > MAX_REQUEST_BYTES:
            raise exceptions.InvalidArgument(
                f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
        http_request = urllib.request.Request(self.predict_url, data=body,
                                              headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http_request, timeout=120) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise exceptions.from_http_status(error.code, error.read().decode()) from None
        result = aiplatform_v1.PredictResponse(deployed_model_id=DEPLOYED_MODEL_ID)
        result.predictions.extend(answer["predictions"])
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
