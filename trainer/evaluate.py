"""`python -m trainer.evaluate --model EXPORT [--model EXPORT ...] --data_dir DIR`.

The metrics of one exported model, or of several averaged (an ensemble, with each member's
accuracy reported too), on a split of a beam_preprocess output directory; exports are
SavedModel directories or .keras files, local or gs://. Expected errors: one line, exit 2.
"""

import json
import sys

from absl import flags

from beam_preprocess import absl_command
from trainer.config import TTA_CHOICES

_MODELS = flags.DEFINE_multi_string("model", None, "Exported model (SavedModel directory or "
                                    ".keras file); repeat for an ensemble.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "beam_preprocess output directory (has "
                                "manifest.json).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write metrics.json and "
                              "confusion_matrix.png (default: print the metrics only).")
_TTA = flags.DEFINE_enum("tta", "none", TTA_CHOICES, "Test-time augmentation: flip or "
                         "ten_crop (4 corners, centre and their mirrors).")
_CROP = flags.DEFINE_float("tta_crop_fraction", 0.875, "ten_crop: side of each crop.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Evaluation batch size.", lower_bound=1)
flags.mark_flags_as_required(["model", "data_dir"])


def main(argv):
    del argv
    from trainer import console

    console.set_up_logging()
    tf = console.import_tensorflow()
    tf.get_logger().setLevel("WARNING")
    from beam_preprocess.user_error import UserError
    from trainer.evaluation.exported import evaluate_exported
    from trainer.evaluation.report_files import write_report

    try:
        report = evaluate_exported(_MODELS.value, _DATA_DIR.value, _SPLIT.value, _TTA.value,
                                   _CROP.value, _BATCH.value)
        if _OUTPUT.value:
            print(f"wrote {write_report(report, _OUTPUT.value)}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: report[k] for k in ("split", "records", "accuracy", "loss", "tta",
                                      "trained_on")}
    summary["macro_f1"] = report["macro_avg"]["f1"]
    if "members" in report:
        summary["members"] = report["members"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    absl_command.run(main)
