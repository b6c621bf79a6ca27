"""The web demo: a page to upload photos (or a webcam snapshot) and a JSON API, in Flask.

    GET  /              the page (static/index.html, app.js, style.css; no build step)
    GET  /api/info      {"class_names", "model", "trained_on", "warning", "provenance",
                         "detector", "max_files", "max_upload_bytes"}: the model's file name,
                        what it was trained on (one line; trainer.export.provenance) and the
                        synthetic-data warning (or null)
    POST /predict       photos as a multipart form (any file fields) or one photo as the raw
                        body; ?annotate=1 adds "annotated": a JPEG data URL of the photo with
                        its faces drawn. Answers the JSON lines of `python -m trainer.predict`
                        for the photos, as one JSON list.
Errors are JSON {"error": "..."}: 400 for no photo, a file that is no image or too many files,
413 for a body over the size limit or an image over the pixel limit. The model and the detector
run one request at a time (a lock): neither is thread-safe, and on a CPU one call already uses
the cores. Serve it with waitress (trainer/serve.py), which runs requests on worker threads.
Each request is logged in one line (logger "trainer.inference.webdemo": method, path, status,
photos, faces, seconds).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import posixpath
import threading
import time

import cv2
import numpy as np
from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from beam_preprocess.user_error import UserError
from trainer.export.provenance import describe
from trainer.inference import video
from trainer.inference.files import (
    NotAnImageError,
    PhotoLimits,
    PhotoTooLargeError,
    UnreadablePhotoError,
    decode_photo,
)
from trainer.inference.photos import annotate, classify_photo, face_lines

_LOG = logging.getLogger("trainer.inference.webdemo")
STATIC_DIR = posixpath.join(posixpath.dirname(__file__), "static")
_ANNOTATED_MAX_SIDE = 1280
_JPEG_QUALITY = 90
WAITRESS_BODY_FACTOR = 4


RAW_BODY_NAME = "upload"  # the name a photo sent as the request body answers under


@dataclasses.dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_files: int = 8
    max_pixels: int = 40_000_000  # a 10 MB PNG can hold a 30000x30000 image


class UnusableAddressError(UserError, OSError):
    """--host and --port name an address this machine cannot listen on (or one in use)."""


class BadUploadError(UserError, ValueError):
    """An upload the demo rejects; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def create_app(model, options: video.FrameOptions | None = None,
               limits: Limits = Limits()) -> Flask:
    """The Flask app serving `model` (a trainer.export.loader.ExportedModel)."""
    options = options or video.FrameOptions()
    app = Flask(__name__, static_folder=STATIC_DIR, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = limits.max_upload_bytes
    app.json.sort_keys = False  # the lines keep the CLI's key order
    model_lock = threading.Lock()

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/api/info")
    def info():
        return jsonify(class_names=model.class_names, model=posixpath.basename(
            model.path.rstrip("/")), trained_on=describe(model.provenance),
            warning=model.synthetic_warning, provenance=model.provenance,
            detector=options.detector, max_files=limits.max_files,
            max_upload_bytes=limits.max_upload_bytes)

    @app.post("/predict")
    def predict():
        uploads = _uploads(limits)
        with_image = request.args.get("annotate", "0").lower() in ("1", "true", "yes")
        lines, errors = [], []
        for name, data in uploads:  # one photo's pixels in memory at a time
            try:
                photo = _decode(name, data, limits)
            except BadUploadError as error:
                errors.append(error)
                lines.append({"file": name, "error": str(error)})
                continue
            with model_lock:
                faces, probabilities = classify_photo(model, photo, options)
            photo_lines = face_lines(name, faces, probabilities, model.class_names)
            if with_image:
                url = _data_url(annotate(photo, faces, photo_lines))
                photo_lines = [{**line, "annotated": url} for line in photo_lines]
            lines.extend(photo_lines)
        g.photos = len(uploads)
        g.faces = sum(1 for line in lines if "emotion" in line)
        if len(errors) == len(uploads):  # nothing to answer: the (first) problem is the answer
            raise errors[0]
        return jsonify(lines)

    @app.before_request
    def start_clock():
        g.started = time.monotonic()

    @app.after_request
    def log_request(response):
        extra = (f" {g.photos} photo(s) {g.faces} face(s)" if "photos" in g else "")
        _LOG.info("%s %s %d%s %.2f s", request.method, request.path, response.status_code,
                  extra, time.monotonic() - g.get("started", time.monotonic()))
        return response

    @app.errorhandler(BadUploadError)
    def bad_upload(error: BadUploadError):
        return jsonify(error=str(error)), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if isinstance(error, RequestEntityTooLarge):
            message = f"upload larger than {limits.max_upload_bytes} bytes"
        else:
            message = error.description or error.name
        return jsonify(error=message), error.code

    return app


def create_server(app: Flask, host: str, port: int, threads: int, limits: Limits):
    """A waitress server for `app` on host:port (port 0: any free one). Waitress buffers a
    body before the app sees it; up to WAITRESS_BODY_FACTOR times the upload limit Flask
    answers 413 as JSON, beyond it waitress cuts the upload off with its own 413."""
    import waitress

    try:
        return waitress.create_server(
            app, host=host, port=port, threads=threads,
            max_request_body_size=WAITRESS_BODY_FACTOR * limits.max_upload_bytes)
    except OSError as error:
        raise UnusableAddressError(f"cannot listen on {host}:{port} ({error.strerror or error})"
                                   ) from None


def _uploads(limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded photo: a multipart form's files, or the raw body whatever
    its Content-Type (curl --data-binary sends form-urlencoded; the form parser must not
    swallow it)."""
    if request.mimetype.startswith("multipart/"):
        files = [file for key in request.files for file in request.files.getlist(key)]
        if len(files) > limits.max_files:
            raise BadUploadError(f"too many files: {len(files)} (at most {limits.max_files})")
        uploads = [(posixpath.basename(f.filename or "") or "upload", f.read()) for f in files]
    else:
        uploads = [(RAW_BODY_NAME, request.get_data(cache=False))]
    uploads = [(name, data) for name, data in uploads if data]
    if not uploads:
        raise BadUploadError("no photo: send a multipart form with image files, or an image as the "
                        "request body")
    return uploads


def _decode(name: str, data: bytes, limits: Limits) -> np.ndarray:
    """The upload as a BGR photo; BadUploadError (413 for too many pixels, from the header,
    before decoding) if it cannot be one."""
    try:
        return decode_photo(data, name, PhotoLimits(max_bytes=limits.max_upload_bytes,
                                                    max_pixels=limits.max_pixels))
    except PhotoTooLargeError as e:
        raise BadUploadError(str(e), 413) from e
    except NotAnImageError as e:  # a raw body that is no image: its media type is the problem
        raise BadUploadError(f"{e}; send a JPEG, PNG, GIF, WebP, BMP or TIFF image as the "
                             "body, or a multipart form", 415 if name == RAW_BODY_NAME else 400
                             ) from e
    except UnreadablePhotoError as e:
        raise BadUploadError(str(e)) from e


def _data_url(image: np.ndarray) -> str:
    """A JPEG data URL of a BGR image, at most _ANNOTATED_MAX_SIDE pixels on its longer side."""
    scale = _ANNOTATED_MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
