"""The HTTP server of the predictor image (containers/predictor.Dockerfile) on Vertex AI endpoints.

    python -m trainer.inference.prediction_server [--model JOB_DIR/model] [--port 8080]

It follows Vertex AI's custom serving container contract (cloud.google.com/vertex-ai/docs/
predictions/custom-container-requirements): it listens on $AIP_HTTP_PORT, answers $AIP_HEALTH_ROUTE
once the model is loaded, serves $AIP_PREDICT_ROUTE, and loads the model Vertex AI copied to
$AIP_STORAGE_URI (the Model's artifact_uri: an export of trainer.export.saved_model, read with
trainer.export.loader, the loader `python -m trainer.inference.photos` uses).

Predict request body (what `python -m launch predict` sends; PredictRequest.instances):
    {"instances": [FACE, ...]}   FACE: 48x48 nested list of ints 0..255 (one grey face as fer2013
                                 stores it, a row per line), or {"faces": <that list>}
Response body:
    {"predictions": [{"emotion": "happy", "probability": 0.91, "class_index": 3,
                      "probabilities": {"angry": 0.01, ...}}, ...]}
one prediction per instance, in order. A malformed request gets HTTP 400 and {"error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from beam_preprocess.user_error import UserError
from trainer.inference.emotion_fields import emotion_fields

FACE_SIDE = 48
DEFAULT_PORT = 8080
DEFAULT_PREDICT_ROUTE = "/predict"
DEFAULT_HEALTH_ROUTE = "/health"
MAX_INSTANCES = 1000  # Vertex AI caps a request at 1.5 MB; a face is ~9 kB of JSON
_LOG = logging.getLogger("trainer.inference.prediction_server")


class BadRequestError(UserError, ValueError):
    """The request body is not what the predict route takes; the message says why."""


def faces_from_body(body: bytes) -> np.ndarray:
    """uint8 [N, 48, 48] from a predict request body, or BadRequestError."""
    try:
        request = json.loads(body or b"null")
    except ValueError as error:
        raise BadRequestError(f"the body is not JSON ({error})") from None
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
        raise BadRequestError('the body must be a JSON object {"instances": [face, ...]}')
    instances = request["instances"]
    if not instances:
        raise BadRequestError("no instances")
    if len(instances) > MAX_INSTANCES:
        raise BadRequestError(f"{len(instances)} instances; send at most {MAX_INSTANCES}")
    faces = np.zeros((len(instances), FACE_SIDE, FACE_SIDE), np.uint8)
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            instance = instance.get("faces")
        try:
            face = np.asarray(instance, dtype=np.float64)
        except (TypeError, ValueError):
            face = None
        if face is None or face.shape not in ((FACE_SIDE, FACE_SIDE), (FACE_SIDE, FACE_SIDE, 1)):
            raise BadRequestError(
                f"instance {i} is not a {FACE_SIDE}x{FACE_SIDE} grey face (a list of "
                f"{FACE_SIDE} rows of {FACE_SIDE} integers 0..255)")
        if np.any(face < 0) or np.any(face > 255) or np.any(face != np.round(face)):
            raise BadRequestError(f"instance {i} has pixels that are not integers 0..255")
        faces[i] = face.reshape(FACE_SIDE, FACE_SIDE)
    return faces


def prediction_rows(probabilities: np.ndarray, class_names: list[str]) -> list[dict]:
    return [{**emotion_fields(row, class_names), "class_index": int(np.argmax(row))}
            for row in probabilities]


class Predictor:
    """The loaded model as a function of request bodies (thread-safe: TF functions are)."""

    def __init__(self, model):
        self.model = model  # a trainer.export.loader.ExportedModel (or anything alike)

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    def predict(self, body: bytes) -> dict:
        faces = faces_from_body(body)
        probabilities = np.asarray(self.model.probabilities(faces), np.float64)
        return {"predictions": prediction_rows(probabilities, self.class_names)}


def make_handler(predictor: Predictor, predict_route: str, health_route: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0] == health_route:
                self._reply(HTTPStatus.OK, {"status": "ready",
                                            "classes": predictor.class_names})
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?", 1)[0] != predict_route:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
                return
            try:
                self._reply(HTTPStatus.OK, predictor.predict(body))
            except BadRequestError as error:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except Exception as error:  # noqa: BLE001 - the client gets a 500, the log the trace
                _LOG.exception("prediction failed")
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR,
                            {"error": f"prediction failed: {type(error).__name__}"})

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            _LOG.info("%s %s", self.address_string(), format % args)

    return Handler


def make_server(predictor: Predictor, port: int, host: str = "0.0.0.0",
                predict_route: str = DEFAULT_PREDICT_ROUTE,
                health_route: str = DEFAULT_HEALTH_ROUTE) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(predictor, predict_route, health_route))


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Serve an exported emotion model over HTTP.")
    parser.add_argument("--model", default=os.environ.get("AIP_STORAGE_URI"),
                        help="export directory (SavedModel) or model.keras, local or gs:// "
                        "(default: $AIP_STORAGE_URI, set by Vertex AI)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("AIP_HTTP_PORT", DEFAULT_PORT)))
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    if not args.model:
        print("error: no model: pass --model or set AIP_STORAGE_URI", file=sys.stderr)
        return 2
    from trainer.export.loader import load_exported

    try:
        model = load_exported(args.model)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", DEFAULT_PREDICT_ROUTE)
    health_route = os.environ.get("AIP_HEALTH_ROUTE", DEFAULT_HEALTH_ROUTE)
    server = make_server(Predictor(model), args.port, args.host, predict_route, health_route)
    _LOG.info("Serving %s (%s) on %s:%d, predict %s, health %s", model.describe(),
              ", ".join(model.class_names), args.host, args.port, predict_route, health_route)
    if model.synthetic_warning:
        _LOG.warning(model.synthetic_warning)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(sys.argv[1:]))
