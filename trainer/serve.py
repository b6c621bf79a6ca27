"""The live web demo: upload photos or a webcam snapshot, see each face's emotions.

    python -m trainer.serve --model JOB_DIR/model [--port 8080] [--host 127.0.0.1]

--model is any export (SavedModel directory, model.keras, .tflite, .onnx; local or gs://).
Open http://HOST:PORT/ in a browser; the JSON API is POST /predict
(trainer/inference/webdemo/app.py).
The default host serves this machine only; --host 0.0.0.0 serves the network (there is no
authentication). A bad flag or a model that cannot be loaded: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys

from absl import app, flags

from beam_preprocess import absl_command
from trainer import console

# The photo libraries import TensorFlow: first, quietly (no CUDA noise on CPU machines).
console.import_tensorflow()

from trainer.inference.faces import detection  # noqa: E402

EXIT_USAGE = 2
FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_multi_string(
        "model", None, "Exported model (repeat for an ensemble: the mean probabilities): "
        "saved_model directory, model.keras, model.tflite or model.onnx; local or gs://.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
    flags.DEFINE_integer("port", 8080, "Port to listen on (0: any free port).", lower_bound=0,
                         upper_bound=65535)
    flags.DEFINE_enum("detector", detection.DEFAULT_DETECTOR, list(detection.DETECTOR_CHOICES),
                      "Face detector.")
    flags.DEFINE_integer("max_upload_mb", 10, "Largest request body, in MB.", lower_bound=1)
    flags.DEFINE_integer("max_files", 8, "Most photos in one request.", lower_bound=1)
    flags.DEFINE_integer("threads", 4, "Waitress worker threads (requests in flight; the "
                         "model itself runs one at a time).", lower_bound=1)
    flags.mark_flag_as_required("model")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}", exitcode=EXIT_USAGE)
    from beam_preprocess.user_error import UserError
    from trainer.export.loader import load_ensemble
    from trainer.inference.video import FrameOptions
    from trainer.inference.webdemo.app import Limits, create_app, create_server

    console.set_up_logging()  # one readable line per request (trainer.inference.webdemo)
    limits = Limits(max_upload_bytes=FLAGS.max_upload_mb * 1024 * 1024,
                    max_files=FLAGS.max_files)
    try:
        detection.get_detector(FLAGS.detector)
        model = load_ensemble(FLAGS.model)
        server = create_server(create_app(model, FrameOptions(detector=FLAGS.detector), limits),
                               FLAGS.host, FLAGS.port, FLAGS.threads, limits)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    console.print_provenance(model)
    print(f"Serving {' + '.join(FLAGS.model)} on http://{FLAGS.host}:{server.effective_port}/ "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    _define_flags()
    absl_command.run(main)
