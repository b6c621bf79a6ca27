"""Online prediction: `launch deploy` and `launch predict` dry runs (the exact requests, nothing
contacted), what they send to fakes of Vertex AI's clients, and the predictor image's HTTP server
answering real requests from a small SavedModel."""

import io
import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from google.cloud import aiplatform_v1
from google.protobuf import json_format
from matplotlib import cbook

from launch.__main__ import main
from launch.common.errors import LaunchError
from launch.endpoint import predict_cli
from launch.endpoint import request as endpoint_request
from launch.endpoint import submit as endpoint_submit
from trainer.inference import prediction_server

PROJECT, REGION = "my-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
EXPORT = "gs://fer-bucket/runs/run1/model"
PREDICTOR = f"{REGION}-docker.pkg.dev/{PROJECT}/vggface-emotion/predictor:0.1.0"
DEPLOY = ["--project=my-project", "--region=us-central1", f"--model={EXPORT}",
          "--model_id=emotion-v1", "--endpoint_id=emotion-ep"]
CLASS_NAMES = ["angry", "happy", "sad"]


def deploy_dry_run(capsys, *args) -> dict:
    assert main(["launch", "deploy", *DEPLOY, *args, "--dry_run"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"Dry run: not checked that {EXPORT} holds a SavedModel")
    return json.loads(captured.out)


# --- launch deploy -----------------------------------------------------------------------------

def test_deploy_dry_run_prints_upload_create_and_deploy(capsys, offline):
    requests = deploy_dry_run(capsys)
    assert requests["uploadModelRequest"] == {
        "parent": PARENT,
        "modelId": "emotion-v1",
        "model": {
            "displayName": "vggface-emotion",
            "description": "Facial emotion from 48x48 grey faces (vggface-emotion export; "
                           "instances: 48x48 lists of 0..255).",
            "containerSpec": {
                "imageUri": PREDICTOR,  # ours: TensorFlow 2.21, the export's version
                "ports": [{"containerPort": 8080}],
                "predictRoute": "/predict",
                "healthRoute": "/health",
            },
            "artifactUri": EXPORT,
        },
    }
    assert requests["createEndpointRequest"] == {
        "parent": PARENT, "endpointId": "emotion-ep",
        "endpoint": {"displayName": "vggface-emotion"}}
    assert requests["deployModelRequest"] == {
        "endpoint": f"{PARENT}/endpoints/emotion-ep",
        "deployedModel": {
            "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-2"},
                                   "minReplicaCount": 1, "maxReplicaCount": 1},
            "model": f"{PARENT}/models/emotion-v1",  # the model uploadModelRequest creates
            "displayName": "vggface-emotion",
        },
        "trafficSplit": {"0": 100},
    }


def test_deploy_to_an_existing_endpoint_with_a_traffic_split(capsys, offline):
    requests = deploy_dry_run(
        capsys, "--endpoint=1234567", "--traffic_split=new=20,8888=80",
        "--machine_type=n1-highcpu-4",
        "--accelerator_type=NVIDIA_TESLA_T4", "--min_replicas=2", "--max_replicas=5",
        "--labels=team=ml", "--display_name=emotion-canary",
        "--service_account=serve@my-project.iam.gserviceaccount.com",
        "--serving_image={region}-docker.pkg.dev/{project}/other/server:{version}")
    assert "createEndpointRequest" not in requests
    model = requests["uploadModelRequest"]["model"]
    assert model["containerSpec"]["imageUri"] == (
        "us-central1-docker.pkg.dev/my-project/other/server:0.1.0")
    assert model["labels"] == {"team": "ml"} and model["displayName"] == "emotion-canary"
    deploy = requests["deployModelRequest"]
    assert deploy["endpoint"] == f"{PARENT}/endpoints/1234567"
    assert deploy["trafficSplit"] == {"0": 20, "8888": 80}
    assert deploy["deployedModel"]["dedicatedResources"] == {
        "machineSpec": {"machineType": "n1-highcpu-4", "acceleratorType": "NVIDIA_TESLA_T4",
                        "acceleratorCount": 1},
        "minReplicaCount": 2, "maxReplicaCount": 5}
    assert deploy["deployedModel"]["serviceAccount"] == "serve@my-project.iam.gserviceaccount.com"


def test_deploy_generates_ids_that_link_the_requests(capsys, offline):
    assert main(["launch", "deploy", f"--model={EXPORT}", "--project=p", "--region=europe-west4",
                 "--dry_run"]) == 0
    requests = json.loads(capsys.readouterr().out)
    model_id = requests["uploadModelRequest"]["modelId"]
    endpoint_id = requests["createEndpointRequest"]["endpointId"]
    assert model_id.startswith("vggface-emotion-") and endpoint_id == model_id
    assert requests["deployModelRequest"]["deployedModel"]["model"] == (
        f"projects/p/locations/europe-west4/models/{model_id}")
    assert requests["deployModelRequest"]["endpoint"] == (
        f"projects/p/locations/europe-west4/endpoints/{endpoint_id}")
    assert requests["uploadModelRequest"]["model"]["containerSpec"]["imageUri"] == (
        "europe-west4-docker.pkg.dev/p/vggface-emotion/predictor:0.1.0")


@pytest.mark.parametrize(("args", "expected"), [
    (["--traffic_split=new=50,1=40", "--endpoint=9"], "add up to 90, not 100"),
    (["--traffic_split=new=20,8888=80"], "pass the --endpoint they are deployed on"),
    (["--traffic_split=new"], "is not KEY=PERCENT"),
    (["--min_replicas=3", "--max_replicas=2"], "need 1 <= min <= max"),
    (["--model=gs://b/export/model.keras"], "must be the gs:// directory of an exported"),
    (["--model=/local/saved_model"], "must be a Cloud Storage path"),
    (["--model_id=1abc"], "--model_id='1abc'"),
    (["--endpoint=projects/p/locations/europe-west4/endpoints/1"], "is in europe-west4"),
    (["--endpoint=Bad_Id"], "is neither an endpoint ID"),
    (["--accelerator_type=T4"], "'T4' is not one of"),
    (["--serving_image={zone}/x:1"], "placeholder(s) zone"),
])
def test_deploy_refuses_bad_settings_with_one_message(capsys, args, expected):
    assert main(["launch", "deploy", *DEPLOY, *args, "--dry_run"]) in (1, 2)
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert expected in captured.err


class Operation:
    def __init__(self, result):
        self._result = result

    def result(self, timeout=None):
        return self._result


class FakeModelService:
    def __init__(self, calls):
        self.calls = calls

    def upload_model(self, *, request):
        self.calls.append(("upload_model", request))
        return Operation(aiplatform_v1.UploadModelResponse(model=f"{PARENT}/models/emotion-v1"))


class FakeEndpointService:
    def __init__(self, calls):
        self.calls = calls

    def create_endpoint(self, *, request):
        self.calls.append(("create_endpoint", request))
        return Operation(aiplatform_v1.Endpoint(name=f"{PARENT}/endpoints/emotion-ep"))

    def deploy_model(self, *, request):
        self.calls.append(("deploy_model", request))
        return Operation(aiplatform_v1.DeployModelResponse(
            deployed_model=aiplatform_v1.DeployedModel(id="777")))


def test_deploy_sends_the_three_requests_in_order():
    spec = endpoint_request.DeploySpec(project=PROJECT, region=REGION, artifact_uri=EXPORT,
                              serving_image=PREDICTOR, model_id="emotion-v1",
                              endpoint_id="emotion-ep")
    calls, lines = [], []
    deployed = endpoint_submit.deploy(spec, model_client=FakeModelService(calls),
                                     endpoint_client=FakeEndpointService(calls),
                                     echo=lines.append)
    assert calls == [("upload_model", endpoint_request.upload_model_request(spec)),
                     ("create_endpoint", endpoint_request.create_endpoint_request(spec)),
                     ("deploy_model", endpoint_request.deploy_model_request(spec))]
    assert deployed.deployed_model.id == "777"
    assert f"Deployed model 777 on {PARENT}/endpoints/emotion-ep" in lines


def test_deploy_refuses_an_artifact_without_a_saved_model(gcs_emulator, gcs_client):
    """Vertex AI would take the upload and fail only when the billed machines start."""
    run = f"gs://{gcs_emulator}/runs/run1"
    gcs_client.bucket(gcs_emulator).blob("runs/run1/model/saved_model.pb").upload_from_string(b"x")
    endpoint_submit.check_saved_model(gcs_client, f"{run}/model")
    endpoint_submit.check_saved_model(gcs_client, f"{run}/model/")
    with pytest.raises(LaunchError, match=r"--model=.*/runs/run1/export holds no SavedModel "
                       r"\(no saved_model.pb there\). The trainer writes it to JOB_DIR/model/"):
        endpoint_submit.check_saved_model(gcs_client, f"{run}/export")


# --- the predictor's server --------------------------------------------------------------------

def write_tiny_export(path):
    """A SavedModel with trainer.export.saved_model's endpoints: brighter faces lean to 'sad'."""
    import tensorflow as tf

    names = tf.constant(CLASS_NAMES)

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable([-1.0, 0.0, 1.0])

        def _probabilities(self, faces):
            pixels = tf.cast(tf.reshape(faces, [-1, 48 * 48]), tf.float32)
            brightness = tf.reduce_mean(pixels, axis=1, keepdims=True) / 255.0
            return tf.nn.softmax(4.0 * brightness * self.weights[None, :])

        @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="faces")])
        def serve(self, faces):
            probabilities = self._probabilities(faces)
            index = tf.argmax(probabilities, axis=1)
            return {"probabilities": probabilities, "class_index": index,
                    "class_name": tf.gather(names, index)}

        @tf.function(input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.uint8,
                                                     name="images")])
        def classify_records(self, images):
            probabilities = self._probabilities(images)
            return {"logits": tf.math.log(probabilities), "probabilities": probabilities}

        @tf.function(input_signature=[])
        def metadata(self):
            return {"class_names": names, "image_size": tf.constant(48)}

    module = Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from trainer.export.loader import load_exported

    model = load_exported(write_tiny_export(tmp_path_factory.mktemp("export") / "saved_model"))
    httpd = prediction_server.make_server(prediction_server.Predictor(model), 0, "127.0.0.1")
    prediction_server.serve_in_thread(httpd)
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def post(url: str, payload) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_health_and_predictions(server):
    with urllib.request.urlopen(f"{server}/health", timeout=30) as response:
        assert json.loads(response.read()) == {"status": "ready", "classes": CLASS_NAMES}
    dark, bright = np.zeros((48, 48), int), np.full((48, 48), 255)
    status, body = post(f"{server}/predict",
                        {"instances": [dark.tolist(), {"faces": bright.tolist()},
                                       (bright.astype(float)).tolist()]})
    assert status == 200
    first, second, third = body["predictions"]
    assert first["probabilities"] == {name: pytest.approx(1 / 3, abs=1e-6)
                                      for name in CLASS_NAMES}
    expected = np.exp([-4.0, 0.0, 4.0]) / np.exp([-4.0, 0.0, 4.0]).sum()
    assert second == {"emotion": "sad", "probability": pytest.approx(expected[2], abs=1e-6),
                      "class_index": 2,
                      "probabilities": pytest.approx(
                          dict(zip(CLASS_NAMES, expected, strict=True)), abs=1e-6)}
    assert third == second  # 255.0 is 255: what a protobuf Value makes of our integers


@pytest.mark.parametrize(("payload", "expected"), [
    (b"not json", "the body is not JSON"),
    ({"faces": []}, '{"instances": [face, ...]}'),
    ({"instances": []}, "no instances"),
    ({"instances": [[[1, 2], [3, 4]]]}, "instance 0 is not a 48x48 grey face"),
    ({"instances": [np.full((48, 48), 256).tolist()]}, "not integers 0..255"),
    ({"instances": [np.full((48, 48), 0.5).tolist()]}, "not integers 0..255"),
])
def test_server_rejects_malformed_requests(server, payload, expected):
    status, body = post(f"{server}/predict", payload)
    assert status == 400 and expected in body["error"]


# --- launch predict ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Grace Hopper (one face), the same photo twice side by side (two), a wall, a broken file."""
    directory = tmp_path_factory.mktemp("photos")
    hopper = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    cv2.imwrite(str(directory / "hopper.jpg"), hopper)
    cv2.imwrite(str(directory / "pair.png"), np.concatenate([hopper, hopper], axis=1))
    cv2.imwrite(str(directory / "wall.png"), np.full((200, 300, 3), 128, np.uint8))
    (directory / "broken.jpg").write_bytes(b"\xff\xd8 no")
    return directory


def predict_flags(*args):
    fv = predict_cli.define_flags()
    fv(["predict", "--endpoint=emotion-ep", f"--project={PROJECT}", f"--region={REGION}",
        "--detector=haar", *args])
    return fv


def test_predict_dry_run_prints_the_predict_requests(photos, offline, capsys):
    from trainer.inference.faces.detection import find_faces

    out = io.StringIO()
    paths = [str(photos / "hopper.jpg"), str(photos / "pair.png"), str(photos / "wall.png")]
    assert predict_cli.run(predict_flags("--dry_run", "--batch_size=2"), paths, out=out) == 0
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    expected_faces = []
    for path in paths:
        boxes, crops = find_faces(cv2.imread(path), 0.1, 32, detector="haar")
        expected_faces += [(path, i, box.as_dict(), crop) for i, (box, crop)
                           in enumerate(zip(boxes, crops, strict=True))]
    assert len(expected_faces) == 3
    assert [len(p["faces"]) for p in printed] == [2, 1]  # --batch_size faces per request
    sent = [face for p in printed for face in p["faces"]]
    instances = [instance for p in printed for instance in p["predictRequest"]["instances"]]
    for (path, index, box, crop), face, instance in zip(expected_faces, sent, instances,
                                                          strict=True):
        assert face == {"file": path, "face": index, "box": box}
        np.testing.assert_array_equal(np.array(instance), crop)  # the 48x48 crop, as is
    for p in printed:
        assert p["predictRequest"]["endpoint"] == f"{PARENT}/endpoints/emotion-ep"
        assert set(p["predictRequest"]) <= {"endpoint", "instances", "labels"}


class LocalEndpoint:
    """A PredictionServiceClient that sends each request's instances to the local server, as
    Vertex AI forwards them to the serving container."""

    def __init__(self, url):
        self.url, self.requests = url, []

    def predict(self, *, request):
        self.requests.append(request)
        body = json_format.MessageToDict(aiplatform_v1.PredictRequest.pb(request))
        status, answer = post(f"{self.url}/predict", {"instances": body["instances"]})
        assert status == 200, answer
        response = aiplatform_v1.PredictResponse(deployed_model_id="777")
        response.predictions.extend(answer["predictions"])
        return response


def test_predict_reads_the_faces_through_the_endpoint(photos, server, capsys):
    out, endpoint = io.StringIO(), LocalEndpoint(server)
    code = predict_cli.run(predict_flags(), [str(photos)], out=out, client=endpoint)
    assert code == 1  # broken.jpg could not be read
    lines = {(line["file"].rsplit("/", 1)[-1], line.get("face")): line
             for line in map(json.loads, out.getvalue().splitlines())}
    assert set(lines) == {("broken.jpg", None), ("hopper.jpg", 0), ("pair.png", 0),
                          ("pair.png", 1), ("wall.png", None)}
    assert "error" in lines[("broken.jpg", None)]
    assert lines[("wall.png", None)] == {"file": str(photos / "wall.png"), "faces": 0}
    hopper = lines[("hopper.jpg", 0)]
    assert set(hopper) == {"file", "faces", "face", "box", "emotion", "probability",
                           "probabilities"}  # the shape trainer.inference.photos prints
    assert hopper["faces"] == 1 and set(hopper["probabilities"]) == set(CLASS_NAMES)
    assert hopper["emotion"] == max(hopper["probabilities"], key=hopper["probabilities"].get)
    assert hopper["probability"] == hopper["probabilities"][hopper["emotion"]]
    # The same face gives about the same answer in the doubled photo (its box differs a little).
    assert lines[("pair.png", 0)]["probabilities"] == pytest.approx(hopper["probabilities"],
                                                                   abs=0.01)
    assert len(endpoint.requests) == 1 and len(endpoint.requests[0].instances) == 3
    assert "3 photos read, 3 faces, 1 unreadable" in capsys.readouterr().err


def test_bare_probability_lists_need_class_names():
    prediction = {"probabilities": [0.2, 0.5, 0.3]}
    assert predict_cli.face_result(prediction, CLASS_NAMES) == {
        "emotion": "happy", "probability": 0.5,
        "probabilities": {"angry": 0.2, "happy": 0.5, "sad": 0.3}}
    with pytest.raises(LaunchError, match="pass --class_names"):
        predict_cli.face_result(prediction, [])


def test_predict_needs_photos_and_an_endpoint(capsys):
    assert main(["launch", "predict", "--project=p", "--region=us-central1", "x.jpg"]) == 2
    assert "--endpoint is required" in capsys.readouterr().err
    assert main(["launch", "predict", "--project=p", "--region=us-central1",
                 "--endpoint=1"]) == 2
    assert "give at least one photo" in capsys.readouterr().err
