"""Online prediction on Vertex AI: the requests that register an export, deploy it to an
endpoint and ask it about faces. Pure functions of settings; launch.endpoint.submit sends them.

The Model runs the predictor image (containers/predictor.Dockerfile,
trainer/inference/prediction_server.py):
TensorFlow 2.21, the version that wrote the SavedModel (Vertex AI's prebuilt TensorFlow
prediction images stop at 2.15). Resource IDs are chosen here (UploadModelRequest.model_id,
CreateEndpointRequest.endpoint_id), so the three requests of a deployment name each other and a
dry run shows the exact chain.
"""

from __future__ import annotations

import dataclasses
import json
import re

from google.cloud import aiplatform_v1

from launch.common.errors import LaunchError
from launch.common.validation import check_accelerator

SERVING_PORT = 8080
PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
NEW_MODEL = "0"  # DeployModelRequest.traffic_split's name for the model being deployed
_ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/[^/]+")
_LETTER_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMBER_ID = re.compile(r"[1-9][0-9]{0,8}")
_MODEL_ID = re.compile(r"[a-z_][a-z0-9_-]{0,62}")


@dataclasses.dataclass(frozen=True)
class DeploySpec:
    project: str
    region: str
    artifact_uri: str  # gs://.../model
    serving_image: str
    model_id: str
    display_name: str = "vggface-emotion"
    machine_type: str = "n1-standard-2"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    min_replicas: int = 1
    max_replicas: int = 1
    endpoint: str | None = None  # an existing endpoint (ID or resource name); None: create one
    endpoint_id: str | None = None  # the ID of the endpoint to create
    traffic_split: tuple[tuple[str, int], ...] = ((NEW_MODEL, 100),)
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str | None = None  # what the serving container runs as

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def model_name(self) -> str:
        return f"{self.parent}/models/{self.model_id}"

    @property
    def endpoint_name(self) -> str:
        if self.endpoint:
            return endpoint_resource(self.endpoint, self.project, self.region)
        return f"{self.parent}/endpoints/{self.endpoint_id}"


def endpoint_resource(endpoint: str, project: str, region: str) -> str:
    """projects/P/locations/R/endpoints/ID from an ID or a full resource name."""
    if endpoint.startswith("projects/"):
        if not _ENDPOINT_NAME.fullmatch(endpoint):
            raise LaunchError(f"--endpoint={endpoint!r} is not projects/P/locations/R/"
                              "endpoints/ID.")
        location = endpoint.split("/")[3]
        if location != region:
            raise LaunchError(f"--endpoint is in {location}, but --region is {region}: "
                              "an endpoint is served from its own region.")
        return endpoint
    if not (_NUMBER_ID.fullmatch(endpoint) or _LETTER_ID.fullmatch(endpoint)):
        raise LaunchError(f"--endpoint={endpoint!r} is neither an endpoint ID (as `gcloud ai "
                          "endpoints list` shows it) nor projects/P/locations/R/endpoints/ID.")
    return f"projects/{project}/locations/{region}/endpoints/{endpoint}"


def parse_traffic_split(items: list[str]) -> tuple[tuple[str, int], ...]:
    """['new=80', '1234=20'] -> (('0', 80), ('1234', 20)); 'new' (or '0') is the model being
    deployed, other keys are IDs of models already deployed on the endpoint."""
    split: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = NEW_MODEL if key in ("new", NEW_MODEL) else key
        if not sep or not value.isdigit() or not 0 <= int(value) <= 100:
            raise LaunchError(f"--traffic_split: {item!r} is not KEY=PERCENT (e.g. "
                              "--traffic_split=new=20,DEPLOYED_MODEL_ID=80).")
        if key in split:
            raise LaunchError(f"--traffic_split: {key!r} is given twice.")
        split[key] = int(value)
    if not split:
        return ((NEW_MODEL, 100),)
    if sum(split.values()) != 100:
        raise LaunchError(f"--traffic_split percentages add up to {sum(split.values())}, not "
                          "100.")
    return tuple(split.items())


def check_spec(spec: DeploySpec) -> None:
    if not spec.artifact_uri.startswith("gs://") or spec.artifact_uri.endswith(".keras"):
        raise LaunchError(f"--model={spec.artifact_uri!r} must be the gs:// directory of an "
                          "exported SavedModel (JOB_DIR/model): Vertex AI copies "
                          "that directory to the serving machines.")
    if not _MODEL_ID.fullmatch(spec.model_id):
        raise LaunchError(f"--model_id={spec.model_id!r}: at most 63 lower-case letters, digits, "
                          "'_' or '-', not starting with a digit or '-'.")
    if spec.endpoint is None and not (spec.endpoint_id and _LETTER_ID.fullmatch(spec.endpoint_id)):
        raise LaunchError(f"--endpoint_id={spec.endpoint_id!r}: lower-case letters, digits and "
                          "'-', starting with a letter, at most 63 characters.")
    if not 1 <= spec.min_replicas <= spec.max_replicas:
        raise LaunchError(f"--min_replicas={spec.min_replicas} and --max_replicas="
                          f"{spec.max_replicas}: need 1 <= min <= max (Vertex AI keeps min "
                          "replicas running, and billed, at all times).")
    others = [key for key, _ in spec.traffic_split if key != NEW_MODEL]
    if others and spec.endpoint is None:
        raise LaunchError("--traffic_split names deployed models "
                          f"({', '.join(others)}), but a new endpoint has none: pass the "
                          "--endpoint they are deployed on.")
    check_accelerator(spec.accelerator_type)


def upload_model_request(spec: DeploySpec) -> aiplatform_v1.UploadModelRequest:
    """Registers the export in the Model Registry with our serving container."""
    check_spec(spec)
    container = aiplatform_v1.ModelContainerSpec(
        image_uri=spec.serving_image,
        ports=[aiplatform_v1.Port(container_port=SERVING_PORT)],
        predict_route=PREDICT_ROUTE,
        health_route=HEALTH_ROUTE,
    )
    model = aiplatform_v1.Model(
        display_name=spec.display_name,
        description="Facial emotion from 48x48 grey faces (vggface-emotion export; instances: "
                    "48x48 lists of 0..255).",
        artifact_uri=spec.artifact_uri.rstrip("/"),
        container_spec=container,
        labels=dict(spec.labels),
    )
    return aiplatform_v1.UploadModelRequest(parent=spec.parent, model_id=spec.model_id,
                                            model=model)


def create_endpoint_request(spec: DeploySpec) -> aiplatform_v1.CreateEndpointRequest | None:
    """None when deploying to an existing endpoint."""
    check_spec(spec)
    if spec.endpoint:
        return None
    return aiplatform_v1.CreateEndpointRequest(
        parent=spec.parent, endpoint_id=spec.endpoint_id,
        endpoint=aiplatform_v1.Endpoint(display_name=spec.display_name,
                                        labels=dict(spec.labels)))


def deploy_model_request(spec: DeploySpec) -> aiplatform_v1.DeployModelRequest:
    check_spec(spec)
    machine = aiplatform_v1.MachineSpec(machine_type=spec.machine_type)
    if spec.accelerator_type:
        machine.accelerator_type = aiplatform_v1.AcceleratorType[spec.accelerator_type]
        machine.accelerator_count = max(1, spec.accelerator_count)
    deployed = aiplatform_v1.DeployedModel(
        model=spec.model_name,
        display_name=spec.display_name,
        dedicated_resources=aiplatform_v1.DedicatedResources(
            machine_spec=machine, min_replica_count=spec.min_replicas,
            max_replica_count=spec.max_replicas),
        service_account=spec.service_account or "",
    )
    return aiplatform_v1.DeployModelRequest(endpoint=spec.endpoint_name, deployed_model=deployed,
                                            traffic_split=dict(spec.traffic_split))


def to_dict(message) -> dict:
    """A request as the REST API receives it (camelCase, enum names)."""
    return json.loads(type(message).to_json(message, use_integers_for_enums=False,
                                            always_print_fields_with_no_presence=False))


def predict_request(endpoint_name: str, faces) -> aiplatform_v1.PredictRequest:
    """PredictRequest of uint8 faces [N, 48, 48]: one 48x48 list of integers per instance."""
    request = aiplatform_v1.PredictRequest(endpoint=endpoint_name)
    request.instances.extend([face.astype(int).tolist() for face in faces])
    return request


def endpoint_console_url(endpoint_name: str) -> str:
    parts = aiplatform_v1.EndpointServiceClient.parse_endpoint_path(endpoint_name)
    return (f"https://console.cloud.google.com/vertex-ai/locations/{parts['location']}"
            f"/endpoints/{parts['endpoint']}?project={parts['project']}")
