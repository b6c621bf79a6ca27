"""`python -m launch deploy`: an exported SavedModel on a Vertex AI endpoint (the requests of
launch.endpoint.request)."""

from __future__ import annotations

import datetime
import json
import sys

from absl import flags

from launch.common import images, package
from launch.common.errors import load_credentials
from launch.common.flags import cloud_flags
from launch.common.validation import check_region, parse_labels, require_gcs_uri

USAGE = """\
python -m launch deploy --model gs://.../model --project P --region R \\
    [--machine_type n1-standard-2] [--min_replicas 1] [--max_replicas 1] \\
    [--endpoint EXISTING_ID --traffic_split new=20,DEPLOYED_MODEL_ID=80] [--dry_run]"""


def define_flags() -> flags.FlagValues:
    fv = cloud_flags("the Vertex AI model and endpoint",
                     "the UploadModel, CreateEndpoint and DeployModel requests as JSON")
    flags.DEFINE_string("model", None, "gs:// SavedModel directory the trainer exported "
                        "(JOB_DIR/model).", flag_values=fv)
    flags.DEFINE_string("display_name", "vggface-emotion", "Name of the model, endpoint and "
                        "deployed model in the console.", flag_values=fv)
    flags.DEFINE_string("model_id", None, "Model Registry ID (default: "
                        "vggface-emotion-<UTC timestamp>).", flag_values=fv)
    flags.DEFINE_string("endpoint", None, "Deploy to this existing endpoint (ID or resource "
                        "name) instead of creating one.", flag_values=fv)
    flags.DEFINE_string("endpoint_id", None, "ID of the endpoint to create (default: "
                        "vggface-emotion-<UTC timestamp>).", flag_values=fv)
    flags.DEFINE_string("serving_image", None, "Serving container; {project}, {region}, "
                        "{version} are filled in (default: the predictor image `launch image` "
                        "builds, REGION-docker.pkg.dev/PROJECT/vggface-emotion/predictor:"
                        "VERSION).", flag_values=fv)
    flags.DEFINE_string("machine_type", "n1-standard-2", "Machine type of each serving "
                        "replica (billed per node-hour while deployed).", flag_values=fv)
    flags.DEFINE_string("accelerator_type", None, "e.g. NVIDIA_TESLA_T4 (default: none; 48x48 "
                        "faces are cheap on CPU).", flag_values=fv)
    flags.DEFINE_integer("accelerator_count", 1, "Accelerators per replica.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("min_replicas", 1, "Replicas always running (and billed).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("max_replicas", 1, "Autoscaling ceiling.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_list("traffic_split", [], "KEY=PERCENT,...: 'new' is the model being "
                      "deployed, other keys are deployed model IDs on --endpoint; they add up "
                      "to 100 (default: new=100).", flag_values=fv)
    flags.DEFINE_list("labels", [], "key=value,... labels of the model and endpoint.",
                      flag_values=fv)
    flags.DEFINE_string("service_account", None, "Service account the serving container runs "
                        "as.", flag_values=fv)
    return fv


def default_id(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return f"vggface-emotion-{now:%Y%m%d-%H%M%S}"


def spec_from_flags(fv: flags.FlagValues, now: datetime.datetime | None = None):
    from launch.endpoint import request as endpoint_request

    for name in ("model", "project", "region"):
        if not fv[name].value:
            raise flags.ValidationError(f"--{name} is required")
    region = check_region(fv.region)
    version = package.read_distribution().version
    image = (images.expand_image(fv.serving_image, project=fv.project, region=region,
                                 version=version, flag="serving_image")
             if fv.serving_image else images.image_uri("predictor", fv.project, region, version))
    generated = default_id(now)
    return endpoint_request.DeploySpec(
        project=fv.project,
        region=region,
        artifact_uri=require_gcs_uri(fv.model, "model"),
        serving_image=image,
        model_id=fv.model_id or generated,
        display_name=fv.display_name,
        machine_type=fv.machine_type,
        accelerator_type=fv.accelerator_type,
        accelerator_count=fv.accelerator_count if fv.accelerator_type else 0,
        min_replicas=fv.min_replicas,
        max_replicas=fv.max_replicas,
        endpoint=fv.endpoint,
        endpoint_id=None if fv.endpoint else (fv.endpoint_id or generated),
        traffic_split=endpoint_request.parse_traffic_split(fv.traffic_split),
        labels=parse_labels(fv.labels),
        service_account=fv.service_account,
    )


def main(argv: list[str]) -> int:
    from launch.common import cloud_imports

    fv = define_flags()
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(USAGE + "\n\n" + fv.get_help())
        return 0
    extra = fv(argv)[1:]
    if extra:
        raise flags.ValidationError(f"unexpected argument {extra[0]!r}")
    endpoint_request = cloud_imports.require("launch.endpoint.request", "deploy")
    spec = spec_from_flags(fv)
    requests = {
        "uploadModelRequest": endpoint_request.upload_model_request(spec),
        "createEndpointRequest": endpoint_request.create_endpoint_request(spec),
        "deployModelRequest": endpoint_request.deploy_model_request(spec),
    }
    if fv.dry_run:
        print(json.dumps({key: endpoint_request.to_dict(request)
                          for key, request in requests.items() if request is not None}, indent=2))
        print(f"Dry run: not checked that {spec.artifact_uri} holds a SavedModel "
              "(saved_model.pb); a real deploy checks before uploading.", file=sys.stderr)
        return 0
    from google.cloud import storage

    from launch.common import registry
    from launch.endpoint import submit as endpoint_submit

    credentials = load_credentials()
    endpoint_submit.check_saved_model(
        storage.Client(project=spec.project, credentials=credentials), spec.artifact_uri)
    registry.check_image_exists(
        registry.authorized_session(credentials), spec.serving_image,
        f"python -m launch image --project={spec.project} --region={spec.region} "
        "--images=predictor")
    endpoint_submit.deploy(spec, model_client=endpoint_submit.model_client(spec.region,
                                                                          credentials),
                          endpoint_client=endpoint_submit.endpoint_client(spec.region,
                                                                         credentials))
    print(f"Ask it: python -m launch predict --project={spec.project} --region={spec.region} "
          f"--endpoint={spec.endpoint_name.rsplit('/', 1)[1]} PHOTO.jpg")
    return 0
