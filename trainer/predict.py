"""Read the emotions of the faces in photos, videos or a camera with an exported model.

    python -m trainer.predict --model JOB_DIR/model PHOTO_OR_VIDEO_OR_DIR...
        [--output DIR] [--detector mtcnn|haar] [--every_n_frames N]
    python -m trainer.predict --model ... --camera 0 --output DIR [--max_frames N]

--model is any export: the SavedModel directory, model.keras, model.tflite or model.onnx,
local or gs://. A directory argument stands for its photos and videos (not recursive).
stdout gets one JSON line per face of a photo, one per frame of a video and, after a video's
frames, one with its tracks: per face followed across frames, its frames, dominant smoothed
emotion and the share of each (trainer.inference.photos, video and tracking describe them);
stderr ends with a summary.

Exit status: 0 when every input was read, 1 when some could not be read (they are skipped),
2 when the command itself is wrong (no input, bad flags, a model or camera that cannot be
opened), with one line on stderr.
"""

from __future__ import annotations

import sys

from absl import app, flags

from beam_preprocess import absl_command
from trainer import console

# The photo libraries import TensorFlow: first, quietly (no CUDA noise on CPU machines).
console.import_tensorflow()

from beam_preprocess.user_error import UserError  # noqa: E402
from trainer.inference import tracking, video  # noqa: E402
from trainer.inference.faces import detection  # noqa: E402
from trainer.inference.files import make_output_dir  # noqa: E402
from trainer.inference.photos import EXIT_USAGE, PredictOptions, predict_paths  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_multi_string(
        "model", None, "Exported model (repeat for an ensemble: the mean probabilities): "
        "JOB_DIR/model (directory), model.keras, model.tflite or model.onnx; "
        "local or gs://.")
    flags.DEFINE_string("output", None, "Directory (local or gs://) for the annotated photos "
                        "(PNG) and, per video, its .jsonl, .csv timeline and annotated .mp4.")
    flags.DEFINE_enum("detector", detection.DEFAULT_DETECTOR, list(detection.DETECTOR_CHOICES),
                      "Face detector: mtcnn (landmarks, faces aligned before the crop) or haar "
                      "(OpenCV's frontal-face cascade: faster, upright faces only).")
    flags.DEFINE_float("margin", detection.DEFAULT_MARGIN, "Framing: each side of a face box "
                       "grows by this fraction of its width before the crop (aligned faces "
                       "zoom out alike).", lower_bound=0.0)
    flags.DEFINE_integer("min_face_size", detection.DEFAULT_MIN_FACE_SIZE,
                         "Smallest face to look for, in photo pixels.", lower_bound=1)
    flags.DEFINE_integer("every_n_frames", 1, "Videos: read every n-th frame.", lower_bound=1)
    flags.DEFINE_integer("batch_frames", video.DEFAULT_BATCH_FRAMES, "Videos: the faces of "
                         "this many frames go through the model in one call.", lower_bound=1)
    flags.DEFINE_integer("max_frames", None, "Videos and camera: stop after this many frames "
                         "read. A camera otherwise runs until Ctrl-C.", lower_bound=1)
    flags.DEFINE_integer("smooth_frames", tracking.DEFAULT_WINDOW, "Videos and camera: each "
                         "face is tracked across frames and its probabilities averaged over "
                         "its last N frames for the smoothed label (1: off; the raw values "
                         "stay in every line).", lower_bound=1)
    flags.DEFINE_integer("camera", None, "Read this camera (device index, e.g. 0) instead of "
                         "files.", lower_bound=0)
    flags.mark_flag_as_required("model")


def _options() -> PredictOptions:
    frames = video.FrameOptions(every_n_frames=FLAGS.every_n_frames,
                                batch_frames=FLAGS.batch_frames, max_frames=FLAGS.max_frames,
                                margin=FLAGS.margin, min_face_size=FLAGS.min_face_size,
                                detector=FLAGS.detector, smooth_frames=FLAGS.smooth_frames)
    return PredictOptions(FLAGS.output, frames)


def _run(paths: list[str]) -> int:
    from trainer.export.loader import load_ensemble

    try:
        # Before loading the model: a bad --output, detector or camera fails in seconds.
        detection.get_detector(FLAGS.detector)
        if FLAGS.output:
            make_output_dir(FLAGS.output)
        capture = video.open_capture(FLAGS.camera) if FLAGS.camera is not None else None
        classifier = load_ensemble(FLAGS.model)
        console.print_provenance(classifier)
        if capture is not None:
            return _run_camera(classifier, capture)
        summary = predict_paths(classifier, paths, _options())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(summary.line(), file=sys.stderr)
    return summary.exit_code


def _run_camera(classifier, capture) -> int:
    name = f"camera{FLAGS.camera}"
    try:
        result = video.predict_video(classifier, capture, name, _options().frames,
                                     output_stem=name, output_dir=FLAGS.output, live=True)
    finally:
        capture.release()
    print(f"{result.frames} frames read, {result.faces} faces", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    paths = argv[1:]
    if FLAGS.camera is not None and paths:
        raise app.UsageError("Give photos and videos, or --camera, not both.",
                             exitcode=EXIT_USAGE)
    if FLAGS.camera is None and not paths:
        raise app.UsageError("Give at least one photo, video or directory (or --camera N).",
                             exitcode=EXIT_USAGE)
    return _run(paths)


if __name__ == "__main__":
    _define_flags()
    absl_command.run(main)
