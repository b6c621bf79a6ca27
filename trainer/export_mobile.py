"""TFLite and ONNX models of an export, each checked against it.

    python -m trainer.export_mobile --model JOB_DIR/model --output JOB_DIR/export \
        [--formats tflite,onnx] [--int8 --data_dir PREPROCESSED_DIR]

Writes model.tflite (float32), model.onnx and, with --int8, model_int8.tflite (calibrated on
--calibration_faces faces of the training records in --data_dir) to --output, local or gs://,
plus labels.json for the TFLite models. Each is loaded back through trainer.export.loader and
compared with --model on faces (the records' test split with --data_dir, else synthetic faces);
one JSON line per export goes to stdout: path, bytes, max_abs_diff, argmax_agreement (and
accuracy on labelled records). trainer/export/mobile.py does the work.
Exit status: 0, or 2 with one line on stderr for a bad flag or a model that cannot be read.
"""

from __future__ import annotations

import json
import posixpath
import sys

from absl import app, flags

from beam_preprocess import absl_command

EXIT_USAGE = 2
FORMATS = ("tflite", "onnx")
FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("model", None, "The export to convert: SavedModel directory or "
                        "model.keras (local or gs://).")
    flags.DEFINE_string("output", None, "Directory for the new models (local or gs://).")
    flags.DEFINE_list("formats", list(FORMATS), f"Which of {', '.join(FORMATS)} to write.")
    flags.DEFINE_bool("int8", False, "Also write model_int8.tflite, quantised to int8.")
    flags.DEFINE_string("data_dir", None, "A beam_preprocess output: its train records "
                        "calibrate --int8, its test records check every export.")
    flags.DEFINE_integer("calibration_faces", 200, "Faces for int8 calibration.",
                         lower_bound=1)
    flags.DEFINE_integer("check_faces", 200, "Faces to compare each export on.", lower_bound=1)
    flags.mark_flags_as_required(["model", "output"])


def _check_faces(count: int):
    """(faces, labels or None): the test records of --data_dir, else synthetic faces."""
    import numpy as np

    from trainer.export.mobile import labelled_faces_from_records

    if FLAGS.data_dir:  # labelled: each export's accuracy is reported beside the source's
        return labelled_faces_from_records(FLAGS.data_dir, count, split="test")
    from beam_preprocess.synthetic import draw_face

    rng = np.random.default_rng(0)
    return np.stack([draw_face(i % 7, rng) for i in range(count)]), None


def _export_all(source) -> list[dict]:
    from trainer.export import mobile

    faces, labels = _check_faces(FLAGS.check_faces)
    targets = []
    if "tflite" in FLAGS.formats:
        path = posixpath.join(FLAGS.output, mobile.TFLITE_FILENAME)
        targets.append(mobile.export_tflite(source, path))
    if FLAGS.int8:
        calibration = mobile.representative_faces_from_records(FLAGS.data_dir,
                                                               FLAGS.calibration_faces)
        path = posixpath.join(FLAGS.output, mobile.TFLITE_INT8_FILENAME)
        targets.append(mobile.export_tflite(source, path, representative_faces=calibration))
    if "onnx" in FLAGS.formats:
        targets.append(mobile.export_onnx(source, posixpath.join(FLAGS.output,
                                                                 mobile.ONNX_FILENAME)))
    return [mobile.check_export(source, path, faces, labels).as_dict() for path in targets]


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}", exitcode=EXIT_USAGE)
    unknown = sorted(set(FLAGS.formats) - set(FORMATS))
    if unknown:
        raise app.UsageError(f"Unknown --formats {', '.join(unknown)}; choose from "
                             f"{', '.join(FORMATS)}", exitcode=EXIT_USAGE)
    if FLAGS.int8 and not FLAGS.data_dir:
        raise app.UsageError("--int8 needs --data_dir: int8 calibration uses real faces",
                             exitcode=EXIT_USAGE)
    from trainer import console

    console.import_tensorflow()  # quietly: no CUDA noise on CPU machines
    console.set_up_logging()  # the converters' INFO chatter (a 5 kB input-name list) kept out

    from beam_preprocess.user_error import UserError
    from trainer.export.loader import load_exported

    try:
        source = load_exported(FLAGS.model)
        lines = _export_all(source)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    _define_flags()
    absl_command.run(main)
