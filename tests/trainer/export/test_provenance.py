"""trainer.export.provenance: what an export records of its training, and the lines that show
it. (That every export carries it: tests/trainer/test_end_to_end.py, test_mobile.py; that
predict, the web demo and the API show it: their tests.)"""

from __future__ import annotations

import hashlib

from beam_preprocess.record_format import Manifest
from trainer.config import TrainConfig
from trainer.export.provenance import (
    describe,
    ensemble_provenance,
    synthetic_warning,
    training_provenance,
)

NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def manifest(input_path: str, dataset: str = "") -> Manifest:
    return Manifest(image_size=48, label_set="fer2013", class_names=NAMES, splits={},
                    bad_rows=0, input_path=input_path, dataset=dataset)


def test_the_recipe_is_what_differs_from_the_defaults_without_paths_or_hardware():
    config = TrainConfig.of(data_dir="gs://b/records", job_dir="gs://b/job",
                            weights="/home/me/weights/rcmalli_vggface_tf_notop_resnet50.h5",
                            epochs=3, lr_boundaries=(1.0, 2.0), strategy="mirrored",
                            backup_every_steps=50, tta="flip")
    record = training_provenance(config, manifest("gs://b/fer2013.csv"), b"{}", 224)
    assert record["recipe"] == {"epochs": 3, "lr_boundaries": [1.0, 2.0], "tta": "flip"}
    assert record["weights"] == "rcmalli_vggface_tf_notop_resnet50.h5"  # no local path
    assert record["manifest_sha256"] == hashlib.sha256(b"{}").hexdigest()
    assert (record["dataset"], record["synthetic"]) == ("fer2013", False)
    assert (record["image_size"], record["network_image_size"]) == (48, 224)
    assert synthetic_warning(record) is None
    assert describe(record).startswith("trained on fer2013 (fer2013 labels, manifest sha256 "
                                       "44136fa355b3), rcmalli_vggface_tf_notop_resnet50.h5 "
                                       "weights, 48 px records, 7 classes, ")


def test_synthetic_data_is_named_so_and_warns_also_inside_an_ensemble():
    config = TrainConfig.of(data_dir="d", job_dir="j", weights=None)
    drawn = training_provenance(config, manifest("demo/fer2013_synthetic.csv"), b"", 48)
    real = training_provenance(config, manifest("x.csv", dataset="fer2013"), b"", 48)
    assert drawn["dataset"] == "fer2013_synthetic" and drawn["weights"] == "none"
    assert synthetic_warning(drawn).startswith("warning: this model was trained on synthetic")
    assert "random weights" in describe(drawn)
    assert synthetic_warning(ensemble_provenance([real, drawn])) == synthetic_warning(drawn)
    assert synthetic_warning(ensemble_provenance([real, real])) is None
    assert describe(ensemble_provenance([real, {}])) == (
        f"ensemble of {describe(real)}; trained on: unknown (an export written before "
        "provenance was recorded)")
