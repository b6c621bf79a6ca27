"""The trainer learns, and class weights help the rare class.

Learning the synthetic expressions from random weights takes the demo's 4,800 faces x 8 epochs
(tests/test_demo.py). Here, in a few epochs of a few hundred faces, the faces carry a stronger
class cue: their brightness band (tests/trainer_data.draw_lit_face), and the whole network
trains (--trainable_from=all). Measured on this 2-core CPU: test accuracy 0.63-0.64 (chance
0.14); recall of the rare class 0.0 without and 1.0 with --class_weight=balanced.
"""

from __future__ import annotations

import json

import pytest

from tests.trainer_data import balanced_counts, run_trainer, write_data_dir

CHANCE = 1 / 7
RARE = 6  # "neutral": 4 training faces against 48 of every other class
LEARNING_FLAGS = ("--weights=none", "--batch_size=16", "--shuffle_buffer=512",
                  "--head_epochs=1", "--learning_rate=1e-4", "--epochs=4",
                  "--trainable_from=all", "--fine_tune_learning_rate=1e-4",
                  "--backup_every_steps=100")


@pytest.fixture(scope="module")
def imbalanced_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lit_faces")
    write_data_dir(path, {"train": [48] * 6 + [4], "validation": balanced_counts(6),
                          "test": balanced_counts(15)}, image_size=64, drawing="lit_faces")
    return path


def train(data_dir, job_dir, class_weight: str) -> dict:
    result = run_trainer(f"--data_dir={data_dir}", f"--job_dir={job_dir}", *LEARNING_FLAGS,
                         f"--class_weight={class_weight}")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((job_dir / "eval/metrics.json").read_text())


@pytest.mark.slow
def test_training_beats_chance_and_balanced_weights_raise_the_rare_class_recall(
        imbalanced_data, tmp_path):
    plain = train(imbalanced_data, tmp_path / "none", "none")
    balanced = train(imbalanced_data, tmp_path / "balanced", "balanced")
    rare = plain["class_names"][RARE]
    print(f"test accuracy {plain['accuracy']:.3f} (none), {balanced['accuracy']:.3f} "
          f"(balanced); {rare} recall {plain['per_class'][rare]['recall']:.2f} -> "
          f"{balanced['per_class'][rare]['recall']:.2f}")
    assert plain["accuracy"] > 2.5 * CHANCE
    assert balanced["accuracy"] > 2.5 * CHANCE
    assert (balanced["per_class"][rare]["recall"]
            >= plain["per_class"][rare]["recall"] + 0.3)
