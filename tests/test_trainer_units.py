"""Fast in-process tests of the trainer's parts: config, paths, data, losses, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from beam_preprocess.record_format import ManifestError
from tests.support.trainer_data import balanced_counts, write_data_dir
from trainer.training import summaries
from trainer.config import ConfigError, TrainConfig, config_from_flags, define_flags
from trainer.evaluation.metrics import confusion_matrix_png, report_from_confusion, write_report
from trainer.data.input_pipeline import (
    Augmentation,
    CorruptRecordError,
    augment_batch,
    eval_dataset,
    load_manifest,
    naming_corrupt_files,
    train_dataset,
)
from trainer.training.losses import WeightedCrossEntropy, class_weights
from trainer.training.optimizers import Plateau, current_learning_rate
from trainer.training.output_dirs import resolve_output_dirs, worker_temp_dir
from trainer.training.progress import on_vertex
from trainer.training.strategy import StrategyError, create_strategy, current_task, precision_policy
from trainer.training.loop import plan_phases, steps_per_epoch

SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("records")
    write_data_dir(path, {"train": [3, 1, 2, 3, 2, 2, 3], "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=SIZE, num_shards=2)
    return str(path)


# --- configuration ----------------------------------------------------------------------------


def parse(*argv):
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["trainer", *argv])
    return config_from_flags(flag_values)


def test_flags_make_a_config_with_weights_none_meaning_random():
    config = parse("--data_dir=d", "--job_dir=j", "--weights=none", "--epochs=3",
                   "--class_weight=balanced", "--nomixed_precision")
    assert config.weights is None
    assert (config.epochs, config.class_weight, config.image_size) == (3, "balanced", None)
    assert parse("--data_dir=d", "--job_dir=j").weights == "vggface2"


def test_required_flags_are_enforced_by_the_parser():
    with pytest.raises(flags.IllegalFlagValueError, match="data_dir"):
        parse("--job_dir=j")


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "--batch_size must be >= 1"),
    ({"head_epochs": 0, "epochs": 0}, "nothing to train"),
    ({"dropout": 1.0}, "--dropout must be in"),
    ({"random_erasing": 1.5}, "probability"),
    ({"fine_tune_learning_rate": 0.0}, "--fine_tune_learning_rate must be > 0"),
    ({"cache_features": True}, "cannot apply --rotation_degrees=10, --shift_fraction=0.1"),
    ({"cache_features": True, "augment": False, "trainable_from": "all"},
     "--cache_features needs a frozen part"),
])
def test_impossible_values_are_rejected_with_the_flag_name(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data_dir="d", job_dir="j", **changes)


def test_config_files_parse(tmp_path):
    from tests.support.trainer_data import REPO_ROOT

    configs = {name: parse(f"--flagfile={REPO_ROOT / 'configs' / f'{name}.cfg'}",
                           "--data_dir=d", "--job_dir=j")
               for name in ("local_cpu", "local_cpu_cached", "demo", "multi_gpu", "tpu")}
    assert all(config.batch_size >= 1 for config in configs.values())
    assert configs["local_cpu_cached"].cache_features
    assert configs["demo"].weights is None and configs["demo"].trainable_from == "all"
    tpu = parse(f"--flagfile={REPO_ROOT / 'configs' / 'tpu.cfg'}", "--data_dir=d",
                "--job_dir=j")
    assert tpu.strategy == "tpu" and tpu.mixed_precision and tpu.batch_size % 8 == 0


# --- where outputs go -------------------------------------------------------------------------


def test_outputs_go_under_job_dir_by_default():
    dirs = resolve_output_dirs("gs://b/run1/", {})
    assert dirs.checkpoints == "gs://b/run1/checkpoints"
    assert dirs.backup == "gs://b/run1/backup"
    assert dirs.logs == "gs://b/run1/logs"
    assert dirs.saved_model == "gs://b/run1/export/saved_model"
    assert dirs.export == "gs://b/run1/export"
    assert dirs.eval == "gs://b/run1/eval"
    assert dirs.cache == "gs://b/run1/cache"


def test_vertex_ai_directories_win_over_job_dir():
    env = {"AIP_MODEL_DIR": "gs://b/out/model/", "AIP_CHECKPOINT_DIR": "gs://b/out/checkpoints/",
           "AIP_TENSORBOARD_LOG_DIR": "gs://b/out/logs/"}
    dirs = resolve_output_dirs("gs://b/run1", env)
    assert dirs.saved_model == "gs://b/out/model"
    assert dirs.checkpoints == "gs://b/out/checkpoints"
    assert dirs.backup == "gs://b/out/checkpoints/backup"
    assert dirs.logs == "gs://b/out/logs"
    assert dirs.eval == "gs://b/run1/eval"
    assert dirs.export == "gs://b/run1/export"
    assert dirs.cache == "gs://b/run1/cache"  # big and temporary: never in Vertex's model dir


def test_non_chief_workers_write_to_their_own_temporary_dirs():
    assert worker_temp_dir("/j/backup/head", 3) == "/j/backup/head/workertemp_3"
    assert on_vertex({"CLOUD_ML_JOB_ID": "1"}) and on_vertex({"AIP_MODEL_DIR": "x"})
    assert not on_vertex({"HOME": "/root"})


def test_default_strategy_process_is_chief_and_cpu_mixed_precision_is_bfloat16():
    strategy = create_strategy("default")
    assert current_task(strategy).is_chief
    assert precision_policy(True, strategy) == "mixed_bfloat16"
    assert precision_policy(False, strategy) == "float32"
    with pytest.raises(StrategyError, match="unknown strategy"):
        create_strategy("parameter_server")


# --- manifest and data --------------------------------------------------------------------------


def test_manifest_is_checked_against_the_requested_image_size(data_dir, tmp_path):
    assert load_manifest(data_dir).image_size == SIZE
    with pytest.raises(ManifestError, match=f"records are {SIZE}x{SIZE} but --image_size=64"):
        load_manifest(data_dir, image_size=64)
    with pytest.raises(ManifestError, match="manifest.json not found"):
        load_manifest(str(tmp_path))


def test_manifest_without_a_split_is_rejected(tmp_path):
    write_data_dir(tmp_path, {"train": balanced_counts(1), "validation": balanced_counts(1)},
                   image_size=SIZE, num_shards=1)
    with pytest.raises(ManifestError, match="split 'test' has no records"):
        load_manifest(str(tmp_path))


def test_training_batches_have_the_per_replica_size_and_float_faces(data_dir):
    manifest = load_manifest(data_dir)
    dataset = train_dataset(manifest.split_files("train", data_dir), SIZE, 7, 4, None,
                            Augmentation(), shuffle_buffer=8, seed=1)
    images, labels = next(iter(dataset))
    assert images.shape == (4, SIZE, SIZE, 1) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and np.all((labels.numpy() >= 0) & (labels.numpy() < 7))
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0


def test_workers_read_disjoint_train_files(data_dir):
    manifest = load_manifest(data_dir)
    files = manifest.split_files("train", data_dir)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        dataset = train_dataset(files, SIZE, 7, 1, context, None, shuffle_buffer=1, seed=0)
        # One file each: 16 faces split round-robin into 2 files of 8.
        images = np.stack([x.numpy() for x, _ in dataset.take(8)])
        seen.append({image.tobytes() for image in images})
    assert not seen[0] & seen[1]


def test_eval_data_is_padded_so_every_replica_runs_the_same_full_batches(data_dir):
    manifest = load_manifest(data_dir)
    files = manifest.split_files("train", data_dir)
    records = manifest.splits["train"].records  # 16
    per_pipeline = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        per_pipeline.append(list(eval_dataset(files, SIZE, 7, records, 3, 2, context)))
    assert len(per_pipeline[0]) == len(per_pipeline[1]) == 3  # 16 faces -> 18 = 3 x (2 x 3)
    batches = per_pipeline[0] + per_pipeline[1]
    assert all(images.shape[0] == 3 for images, _, _ in batches)
    assert sum(float(tf.reduce_sum(w)) for _, _, w in batches) == records
    counts = np.zeros(7)
    for _, labels, weights in batches:
        np.add.at(counts, labels.numpy(), weights.numpy())
    assert counts.tolist() == manifest.splits["train"].class_counts


def test_a_corrupt_record_is_reported_with_its_file(tmp_path):
    write_data_dir(tmp_path, {"train": balanced_counts(2), "validation": balanced_counts(1),
                              "test": balanced_counts(1)}, image_size=SIZE, num_shards=2)
    manifest = load_manifest(str(tmp_path))
    files = manifest.split_files("train", str(tmp_path))
    shard = tmp_path / "train-00001-of-00002.tfrecord"
    broken = bytearray(shard.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    shard.write_bytes(bytes(broken))
    dataset = train_dataset(files, SIZE, 7, 2, None, None, shuffle_buffer=2, seed=0)
    expected = r"train-00001-of-00002\.tfrecord: record \d"
    with pytest.raises(CorruptRecordError, match=expected), naming_corrupt_files(files, SIZE, 7):
        for _ in dataset.take(20):
            pass


# --- augmentation -----------------------------------------------------------------------------


def test_flip_only_augmentation_mirrors_or_keeps_each_face():
    faces = tf.random.uniform([16, SIZE, SIZE, 1], 0, 255, seed=1)
    out = augment_batch(faces, Augmentation(0.0, 0.0, 0.0, 0.0)).numpy()
    for face, result in zip(faces.numpy(), out, strict=True):
        assert np.allclose(result, face) or np.allclose(result, face[:, ::-1])
    assert not all(np.allclose(r, f) for r, f in zip(out, faces.numpy(), strict=True))


def test_geometric_augmentation_moves_pixels_but_keeps_the_range():
    faces = tf.random.uniform([8, SIZE, SIZE, 1], 0, 255, seed=2)
    out = augment_batch(faces, Augmentation(15.0, 0.1, 0.1, 0.0)).numpy()
    assert out.shape == faces.shape and out.min() >= 0 and out.max() <= 255
    differs = [not (np.allclose(r, f, atol=1) or np.allclose(r, f[:, ::-1], atol=1))
               for r, f in zip(out, faces.numpy(), strict=True)]
    assert all(differs)


def test_random_erasing_replaces_one_rectangle_per_face():
    faces = tf.fill([8, SIZE, SIZE, 1], 128.0)
    out = augment_batch(faces, Augmentation(0.0, 0.0, 0.0, random_erasing=1.0)).numpy()[..., 0]
    for face in out:
        rows, cols = np.nonzero(face != 128.0)
        assert rows.size > 0
        box = face[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box != 128.0).mean() > 0.95  # a filled rectangle, not scattered pixels
    untouched = augment_batch(faces, Augmentation(0.0, 0.0, 0.0, random_erasing=0.0))
    assert np.all(untouched.numpy() == 128.0)


# --- loss, schedule, phases -------------------------------------------------------------------


def test_balanced_class_weights_follow_rarity_and_average_one_per_face():
    counts = [100, 10, 0, 50]
    weights = class_weights("balanced", counts)
    assert weights[1] == pytest.approx(10 * weights[0])
    assert weights[2] == 0.0
    assert np.dot(weights, counts) / sum(counts) == pytest.approx(1.0)
    assert class_weights("none", counts).tolist() == [1.0] * 4


def test_weighted_cross_entropy_scales_each_face_by_its_class_weight():
    logits = tf.constant([[2.0, 0.0], [2.0, 0.0]])
    labels = tf.constant([1, 1])
    plain = WeightedCrossEntropy(2, 0.0, np.array([1.0, 1.0]))(labels, logits).numpy()
    weighted = WeightedCrossEntropy(2, 0.0, np.array([1.0, 3.0]))(labels, logits).numpy()
    assert np.allclose(weighted, 3 * plain)
    smoothed = WeightedCrossEntropy(2, 0.2, np.array([1.0, 1.0]))(labels, logits).numpy()
    assert np.all(smoothed < plain)


def test_plateau_lowers_the_rate_after_patience_epochs_without_improvement():
    import keras

    optimizer = keras.optimizers.Adam(1e-3)
    plateau = Plateau(factor=0.5, patience=2, min_rate=3e-4)
    assert not plateau.update(1.0, optimizer)
    assert not plateau.update(1.1, optimizer)
    assert plateau.update(1.2, optimizer)
    assert current_learning_rate(optimizer) == pytest.approx(5e-4)
    assert not plateau.update(0.9, optimizer)  # improved: wait resets
    plateau.update(1.0, optimizer)
    plateau.update(1.0, optimizer)
    assert current_learning_rate(optimizer) == pytest.approx(3e-4)  # floored at min_rate


def test_phases_follow_each_other_on_one_step_axis():
    config = TrainConfig(data_dir="d", job_dir="j", head_epochs=2, epochs=3)
    per_epoch = steps_per_epoch(config, train_records=100, global_batch=32)
    assert per_epoch == 3
    head, fine_tune = plan_phases(config, per_epoch)
    assert (head.name, head.trainable_from, head.first_step) == ("head", "none", 0)
    assert (fine_tune.trainable_from, fine_tune.first_epoch, fine_tune.first_step) == (
        "conv5_3", 2, 6)
    only_fine_tune = plan_phases(TrainConfig(data_dir="d", job_dir="j", head_epochs=0), 5)
    assert [p.name for p in only_fine_tune] == ["fine_tune"]


# --- evaluation report --------------------------------------------------------------------------


def test_report_derives_per_class_metrics_from_the_confusion_matrix(tmp_path):
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    report = report_from_confusion(confusion, ["a", "b", "c"], "test", loss=0.5)
    assert report["records"] == 14
    assert report["accuracy"] == pytest.approx(11 / 14)
    a, b = report["per_class"]["a"], report["per_class"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(8 / 9), 0.8, 10)
    assert b["precision"] == pytest.approx(3 / 5) and b["recall"] == pytest.approx(0.75)
    assert b["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 0}
    path = write_report(report, str(tmp_path / "eval"))
    with open(path) as f:
        assert json.load(f)["confusion_matrix"] == confusion.tolist()
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert confusion_matrix_png(report)[:4] == b"\x89PNG"


def test_summaries_are_readable_as_tensorboard_scalars(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        summaries.scalar("accuracy", 0.25, step=3)
        summaries.scalar("accuracy", 0.5, step=6)
    writer.flush()
    assert summaries.read_scalars(str(tmp_path)) == {"accuracy": [(3, 0.25), (6, 0.5)]}
