"""Sending the requests of launch.endpoint.request: upload, endpoint, deploy; and predictions."""

from __future__ import annotations

from collections.abc import Callable

from google.cloud import aiplatform_v1
from google.protobuf import json_format

from launch.common.clients import regional_client
from launch.common.errors import LaunchError, explained_cloud_errors
from launch.endpoint import request as endpoint_request

UPLOAD_TIMEOUT_SECONDS = 30 * 60
DEPLOY_TIMEOUT_SECONDS = 60 * 60  # starting the serving machines usually takes 10-20 minutes


def model_client(region: str, credentials) -> aiplatform_v1.ModelServiceClient:
    return regional_client(aiplatform_v1.ModelServiceClient, region, credentials)


def endpoint_client(region: str, credentials) -> aiplatform_v1.EndpointServiceClient:
    return regional_client(aiplatform_v1.EndpointServiceClient, region, credentials)


def prediction_client(region: str, credentials) -> aiplatform_v1.PredictionServiceClient:
    return regional_client(aiplatform_v1.PredictionServiceClient, region, credentials)


def check_saved_model(storage_client, artifact_uri: str) -> None:
    """LaunchError unless artifact_uri holds a SavedModel: Vertex AI would accept the upload
    and fail only when the serving machines (billed) start."""
    bucket, _, folder = artifact_uri.removeprefix("gs://").partition("/")
    name = f"{folder.strip('/')}/saved_model.pb".lstrip("/")
    with explained_cloud_errors(f"Reading {artifact_uri}"):
        found = storage_client.bucket(bucket).blob(name).exists()
    if not found:
        raise LaunchError(f"--model={artifact_uri} holds no SavedModel (no saved_model.pb "
                          "there). The trainer writes it to JOB_DIR/model/ (locally and on "
                          "Vertex AI alike): --model=gs://BUCKET/.../JOB_DIR/model")


def deploy(spec: endpoint_request.DeploySpec, *, model_client, endpoint_client,
           echo: Callable[[str], None] = print) -> aiplatform_v1.DeployModelResponse:
    """Uploads the model, creates the endpoint unless it exists, deploys; waits for each."""
    # All three are checked before the first call.
    upload = endpoint_request.upload_model_request(spec)
    create = endpoint_request.create_endpoint_request(spec)
    deploy_request = endpoint_request.deploy_model_request(spec)
    with explained_cloud_errors(f"Uploading {spec.artifact_uri} to the Model Registry",
                                not_found_hint="\nIs --model the gs:// SavedModel directory?"):
        uploaded = model_client.upload_model(request=upload).result(
            timeout=UPLOAD_TIMEOUT_SECONDS)
    echo(f"Uploaded model {uploaded.model}")
    if create is not None:
        with explained_cloud_errors(f"Creating endpoint {spec.endpoint_name}"):
            endpoint = endpoint_client.create_endpoint(request=create).result(
                timeout=UPLOAD_TIMEOUT_SECONDS)
        echo(f"Created endpoint {endpoint.name}")
    echo(f"Deploying to {spec.endpoint_name} on {spec.min_replicas}-{spec.max_replicas} x "
         f"{spec.machine_type} (usually 10-20 minutes)...")
    with explained_cloud_errors(f"Deploying {spec.model_name} to {spec.endpoint_name}"):
        deployed = endpoint_client.deploy_model(request=deploy_request).result(
            timeout=DEPLOY_TIMEOUT_SECONDS)
    echo(f"Deployed model {deployed.deployed_model.id} on {spec.endpoint_name}")
    echo(f"Console: {endpoint_request.endpoint_console_url(spec.endpoint_name)}")
    return deployed


def predict(client, request: aiplatform_v1.PredictRequest) -> dict:
    """The PredictResponse as a dict: {"predictions": [...], "deployedModelId": ...}."""
    with explained_cloud_errors(f"Asking {request.endpoint}",
                                not_found_hint="\nCheck --endpoint and --region "
                                "(`gcloud ai endpoints list --region=REGION`)."):
        response = client.predict(request=request)
    return json_format.MessageToDict(aiplatform_v1.PredictResponse.pb(response))
