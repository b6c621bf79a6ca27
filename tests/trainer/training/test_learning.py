"""The trainer learns: class weights help the rare class, a class-sorted split trains as a
shuffled one does, and the recipe's options (soft labels, Mixup/CutMix, EMA) learn too.

Learning the synthetic expressions from random weights takes the demo's 2,400 faces x 6 epochs
(tests/test_demo.py). Here, in a few epochs of a few hundred 48 px faces, the faces carry a
stronger class cue: their brightness band (tests/support/trainer_data.draw_lit_face), and the
whole network trains (--trainable_from=all). Measured on a 2-core CPU at 64 px before the data
path moved to the device: test accuracy 0.53-0.70 (chance 0.14); with --class_weight=balanced
the mean probability of the rare class on its own test faces went from 0.015-0.042 to 0.42-0.61
(four runs), its recall from 0.00 to 0.13-1.00 (six runs). At 48 px (to save CI time), one run:
accuracy 0.60 / 0.59 balanced, that probability 0.013 -> 0.19, class-sorted rows 0.50.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.trainer_data import balanced_counts, run_trainer, write_data_dir

CHANCE = 1 / 7
RARE = 6  # "neutral": 4 training faces against 48 of every other class
LEARNING_FLAGS = ("--weights=none", "--batch_size=16", "--shuffle_buffer=512",
                  "--head_epochs=1", "--learning_rate=1e-4", "--epochs=4",
                  "--trainable_from=all", "--fine_tune_learning_rate=1e-4",
                  "--backup_every_steps=100")


IMBALANCED = {"train": [48] * 6 + [4], "validation": balanced_counts(6),
              "test": balanced_counts(15)}


@pytest.fixture(scope="module")
def imbalanced_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lit_faces")
    write_data_dir(path, IMBALANCED, image_size=48, drawing="lit_faces")
    return path


@pytest.fixture(scope="module")
def plain_run(imbalanced_data, tmp_path_factory):
    """(job dir, test metrics) of one run without class weights, shared by the tests that
    compare against it: the same training twice would only cost CI time."""
    job_dir = tmp_path_factory.mktemp("plain")
    return job_dir, train(imbalanced_data, job_dir, "none")


def train(data_dir, job_dir, class_weight: str = "none", *extra: str) -> dict:
    result = run_trainer(f"--data_dir={data_dir}", f"--job_dir={job_dir}", *LEARNING_FLAGS,
                         f"--class_weight={class_weight}", *extra)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((job_dir / "eval/metrics.json").read_text())


def rare_class_probability(data_dir, job_dir) -> float:
    """Mean probability the exported model gives the rare class on the rare test faces."""
    import tensorflow as tf

    from trainer.data.input_pipeline import Pipeline, RecordFiles
    from trainer.data.manifest import load_manifest
    from trainer.export.loader import load_exported

    manifest = load_manifest(str(data_dir))
    model = load_exported(str(job_dir / "export/model.keras"))
    probabilities = []
    test = RecordFiles.of(manifest, "test", str(data_dir))
    for faces, labels, _, weights in test.eval_dataset(Pipeline(), 32, 1):
        rare = (labels.numpy() == RARE) & (weights.numpy() > 0)
        logits = model.logits_of_records(faces)
        probabilities.append(tf.nn.softmax(logits).numpy()[rare, RARE])
    return float(np.concatenate(probabilities).mean())


@pytest.mark.slow
def test_training_beats_chance_and_balanced_weights_raise_the_rare_class(
        imbalanced_data, plain_run, tmp_path):
    plain_job, plain = plain_run
    balanced = train(imbalanced_data, tmp_path / "balanced", "balanced")
    rare = plain["class_names"][RARE]
    plain_probability = rare_class_probability(imbalanced_data, plain_job)
    balanced_probability = rare_class_probability(imbalanced_data, tmp_path / "balanced")
    print(f"test accuracy {plain['accuracy']:.3f} (none), {balanced['accuracy']:.3f} "
          f"(balanced); {rare} recall {plain['per_class'][rare]['recall']:.2f} -> "
          f"{balanced['per_class'][rare]['recall']:.2f}, mean p({rare}) on {rare} faces "
          f"{plain_probability:.3f} -> {balanced_probability:.3f}")
    assert plain["accuracy"] > 2.5 * CHANCE
    assert balanced["accuracy"] > 2.5 * CHANCE
    # The rare class's recall (15 test faces) swings from run to run: 0.00 without weights,
    # 0.13 to 1.00 with them. The probability the model gives it is the steady signal:
    # 0.015-0.042 -> 0.42-0.61 over four runs.
    assert balanced_probability > 3 * plain_probability


@pytest.mark.slow
def test_a_class_sorted_split_trains_as_well_as_a_shuffled_one(plain_run, tmp_path):
    """The same faces, all of class 0 first, then class 1, ... given to the shards round robin
    (what a class-sorted CSV gave the first Beam job, read back in class order): the decoded
    split is shuffled whole every epoch."""
    sorted_data = tmp_path / "sorted"
    write_data_dir(sorted_data, IMBALANCED, image_size=48, drawing="lit_faces", by_class=True)
    _, shuffled = plain_run  # the same faces in shuffled rows
    in_class_order = train(sorted_data, tmp_path / "in_class_order")
    print(f"test accuracy {shuffled['accuracy']:.3f} (shuffled rows), "
          f"{in_class_order['accuracy']:.3f} (class-sorted rows)")
    assert in_class_order["accuracy"] > 2.5 * CHANCE
    assert abs(in_class_order["accuracy"] - shuffled["accuracy"]) < 0.2


@pytest.mark.slow
def test_training_on_vote_distributions_learns(tmp_path):
    """FER+-style records whose faces carry known votes (70 % their class, 30 % the next):
    --ferplus_target=distribution trains on the votes; evaluation scores the majority label."""
    data = tmp_path / "votes"
    write_data_dir(data, {"train": [48] * 7, "validation": balanced_counts(6),
                          "test": balanced_counts(15)}, image_size=48, drawing="lit_faces",
                   votes=True)
    metrics = train(data, tmp_path / "job", "none", "--ferplus_target=distribution")
    print(f"test accuracy {metrics['accuracy']:.3f} on the majority labels")
    assert metrics["accuracy"] > 2.5 * CHANCE


@pytest.mark.slow
def test_training_with_mixup_cutmix_and_ema_learns(imbalanced_data, tmp_path):
    metrics = train(imbalanced_data, tmp_path / "job", "none", "--mixup_alpha=0.2",
                    "--cutmix_alpha=1.0", "--ema_decay=0.9")
    print(f"test accuracy {metrics['accuracy']:.3f} with Mixup/CutMix and EMA weights")
    assert metrics["accuracy"] > 2.5 * CHANCE
