"""`python -m trainer` end to end on tiny synthetic records: outputs, exports, errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from beam_preprocess.synthetic import draw_face
from tests.support.trainer_data import (
    FAST_FLAGS,
    REPO_ROOT,
    balanced_counts,
    run_trainer,
    trainer_env,
    write_data_dir,
)

SIZE = 64


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory):
    data = tmp_path_factory.mktemp("records")
    job = tmp_path_factory.mktemp("job")
    manifest = write_data_dir(data, {"train": balanced_counts(6), "validation": balanced_counts(2),
                                     "test": balanced_counts(2)}, image_size=SIZE)
    result = run_trainer(f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS,
                         "--head_epochs=1", "--epochs=1", "--tta=ten_crop", "--random_erasing=0.5",
                         "--mixup_alpha=0.2", "--cutmix_alpha=0.5", "--crop_scale=0.8")
    assert result.returncode == 0, result.stderr[-4000:]
    return data, job, manifest


@pytest.mark.slow
def test_a_run_writes_checkpoints_logs_metrics_and_exports(trained_job):
    from trainer.training.summaries import read_scalars

    _, job, manifest = trained_job
    for name in ("checkpoints/last.weights.h5", "checkpoints/best.weights.h5",
                 "checkpoints/best.json", "eval/metrics.json", "eval/confusion_matrix.png",
                 "model/saved_model.pb", "export/model.keras",
                 "export/labels.json", "checkpoints/backup/head/checkpoint",
                 "checkpoints/backup/fine_tune/checkpoint", "run.json"):
        assert (job / name).is_file(), name
    metrics = json.loads((job / "eval/metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tta"] == "ten_crop"
    assert metrics["records"] == manifest.splits["test"].records == 14
    assert np.sum(metrics["confusion_matrix"]) == 14
    assert set(metrics["per_class"]) == set(manifest.class_names)
    steps_per_epoch = 42 // 8
    assert metrics["training"]["total_steps"] == 2 * steps_per_epoch
    assert metrics["training"]["steps_run_by_last_process"] == 2 * steps_per_epoch
    validation = read_scalars(str(job / "logs/validation"))
    assert [step for step, _ in validation["accuracy"]] == [steps_per_epoch, 2 * steps_per_epoch]
    assert {"loss", "accuracy", "learning_rate"} <= set(read_scalars(str(job / "logs/train")))
    labels = json.loads((job / "export/labels.json").read_text())
    assert labels["class_names"] == manifest.class_names and labels["image_size"] == SIZE


@pytest.mark.slow
def test_both_exports_record_what_the_model_was_trained_on(trained_job):
    """Data set, its manifest's digest (what `sha256sum manifest.json` prints), weights and
    the recipe's non-default settings, in the SavedModel and in model.keras alike."""
    from trainer.export.loader import load_exported

    data, job, _ = trained_job
    saved_model = load_exported(str(job / "model")).provenance
    assert load_exported(str(job / "export/model.keras")).provenance == saved_model
    digest = hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    assert (saved_model["dataset"], saved_model["synthetic"]) == ("synthetic", True)
    assert saved_model["manifest_sha256"] == digest
    assert (saved_model["weights"], saved_model["image_size"]) == ("none", SIZE)
    assert saved_model["recipe"]["tta"] == "ten_crop"
    assert saved_model["recipe"]["mixup_alpha"] == 0.2
    assert not {"data_dir", "job_dir"} & set(saved_model["recipe"])


SERVE_IN_FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
faces = np.load(sys.argv[2])
serve = loaded.signatures["serving_default"]
out = serve(faces=tf.constant(faces))
out4 = serve(faces=tf.constant(faces[..., None]))
tta = loaded.serving_tta(tf.constant(faces))
json.dump({"probabilities": out["probabilities"].numpy().tolist(),
           "tta_probabilities": tta["probabilities"].numpy().tolist(),
           "probabilities_4d": out4["probabilities"].numpy().tolist(),
           "class_name": [n.decode() for n in out["class_name"].numpy()],
           "class_names": [n.decode() for n in loaded.metadata()["class_names"].numpy()]},
          open(sys.argv[3], "w"))
"""


def records_of(faces: np.ndarray, size: int) -> np.ndarray:
    """The faces as the Beam job stores them and the trainer reads them back: resized by
    record_format.resize_faces, PNG-encoded, decoded."""
    import tensorflow as tf

    from beam_preprocess.images import encode_png
    from beam_preprocess.record_format import resize_faces

    stored = resize_faces(faces[..., None], size).numpy()
    return np.stack([tf.io.decode_png(encode_png(face[..., 0]), channels=1).numpy()
                     for face in stored])


@pytest.mark.slow
def test_saved_model_given_raw_48px_faces_gives_what_training_computed_on_records(trained_job,
                                                                                  tmp_path):
    """One resize implementation: serving raw CSV pixels and evaluating stored records give
    the same probabilities (to 1e-6), in a fresh process with only TensorFlow loaded."""
    import keras
    import tensorflow as tf

    import trainer.vggface.layers  # noqa: F401  (registers the model's layers for loading)

    _, job, manifest = trained_job
    rng = np.random.default_rng(7)
    faces = np.stack([draw_face(label, rng) for label in range(7)]).astype(np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_IN_FRESH_PROCESS, str(job / "model"),
         str(tmp_path / "faces.npy"), str(tmp_path / "out.json")],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    probabilities = np.array(out["probabilities"])

    model = keras.saving.load_model(job / "export/model.keras", compile=False)
    records = records_of(faces, SIZE).astype(np.float32)
    expected = tf.nn.softmax(model(records, training=False)).numpy()
    assert probabilities.shape == (7, 7)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(np.array(out["probabilities_4d"]), probabilities, atol=1e-6)
    assert out["class_names"] == manifest.class_names
    assert out["class_name"] == [manifest.class_names[i] for i in expected.argmax(axis=1)]
    # --tta=ten_crop adds `serving_tta`: the ten views' mean, as the trainer's report used.
    from trainer.data.augmentation import TestTimeAugmentation

    ten_crop = TestTimeAugmentation("ten_crop").probabilities(
        lambda x: model(tf.cast(x, tf.float32), training=False), tf.constant(
            records.astype(np.uint8)))
    np.testing.assert_allclose(np.array(out["tta_probabilities"]), ten_crop, atol=1e-6)
    assert not np.allclose(out["tta_probabilities"], probabilities, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("model_path", ["model", "export/model.keras"])
def test_evaluate_cli_reproduces_the_job_metrics_from_an_export(trained_job, tmp_path,
                                                                model_path):
    data, job, _ = trained_job
    result = subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", f"--model={job / model_path}",
         f"--data_dir={data}", "--split=test", f"--output={tmp_path}", "--tta=ten_crop"],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = json.loads((tmp_path / "metrics.json").read_text())
    theirs = json.loads((job / "eval/metrics.json").read_text())
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    assert (tmp_path / "confusion_matrix.png").is_file()
    summary = json.loads(result.stdout[result.stdout.index("{"):])  # after "wrote ..."
    assert summary["trained_on"][0].startswith(
        f"model {job / model_path}: trained on synthetic (fer2013 labels, manifest sha256 ")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("small")
    write_data_dir(data, {"train": balanced_counts(1), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32, num_shards=1)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("case, args, message", [
    ("no data_dir", ["--job_dir={job}"], "--data_dir"),
    ("no manifest", ["--data_dir={empty}", "--job_dir={job}"], "manifest.json not found"),
    ("empty train shard", ["--data_dir={emptied}", "--job_dir={job}"],
     "train-00000-of-00001.tfrecord: 0 bytes, but the Beam job wrote"),
    ("soft labels of fer2013", ["--data_dir={data}", "--job_dir={job}",
                                "--ferplus_target=distribution"],
     "--ferplus_target=distribution needs FER+ records"),
    ("remote TPU, local paths", ["--data_dir={data}", "--job_dir={job}", "--tpu=my-tpu"],
     "a remote TPU (--tpu=my-tpu) reads and writes only Cloud Storage"),
    # A remote TPU needs gs:// paths; nothing is read from them before the TPU answers.
    ("no such TPU", ["--data_dir=gs://b/records", "--job_dir=gs://b/job", "--strategy=tpu",
                     "--tpu=no-such-tpu"], "cannot reach TPU 'no-such-tpu'"),
    ("silent TPU address", ["--data_dir=gs://b/records", "--job_dir=gs://b/job",
                            "--strategy=tpu", "--tpu=grpc://127.0.0.1:{closed_port}"],
     "Connection refused"),
    ("bad value", ["--data_dir={data}", "--job_dir={job}", "--batch_size=0"],
     "--batch_size must be >= 1"),
])
def test_bad_configuration_fails_with_one_clear_message(small_data, tmp_path, case, args,
                                                        message):
    emptied = tmp_path / "emptied"
    shutil.copytree(small_data, emptied)
    (emptied / "train-00000-of-00001.tfrecord").write_bytes(b"")
    paths = {"data": small_data, "job": tmp_path / "job", "empty": tmp_path,
             "closed_port": closed_port(), "emptied": emptied}
    result = run_trainer(*(a.format(**paths) for a in args), "--weights=none", timeout=120)
    assert result.returncode != 0, case
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "job" / "export").exists()


CACHED_FLAGS = ("--cache_features", "--cache_dtype=float32", "--rotation_degrees=0",
                "--shift_fraction=0", "--zoom_fraction=0")


@pytest.mark.slow
@pytest.mark.parametrize("memory_gb, where", [("4", "kept in memory"),
                                              ("0", "written to TFRecord shards")],
                         ids=["memory", "disk"])
def test_cached_features_train_a_full_model_whose_validation_accuracy_they_reported(
        trained_job, tmp_path, memory_gb, where):
    data, _, manifest = trained_job
    job = tmp_path / "job"
    result = run_trainer(f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS, *CACHED_FLAGS,
                         f"--cache_memory_gb={memory_gb}", "--head_epochs=1", "--epochs=1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert where in result.stderr
    assert (job / "cache").is_dir() == (memory_gb == "0")
    assert json.loads((job / "eval/metrics.json").read_text())["records"] == 14
    # The validation accuracy measured on cached features during training is the exported
    # full model's accuracy on the validation faces.
    best = json.loads((job / "checkpoints/best.json").read_text())
    evaluated = subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", f"--model={job / 'model'}",
         f"--data_dir={data}", "--split=validation", f"--output={tmp_path / 'eval'}"],
        cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    full = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert full["records"] == manifest.splits["validation"].records
    assert full["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_mixed_precision_and_xla_train_on_cpu_and_export_float32(trained_job, tmp_path):
    """The TPU settings (configs/hardware/tpu.cfg) run here first: XLA compiles the steps (device
    augmentation included; a call of --steps_per_execution steps, longer than the epoch's,
    as one program) on CPU, and bfloat16 runs on CPU as on TPU."""
    import keras

    import trainer.vggface.layers  # noqa: F401  (registers the model's layers for loading)

    data, _, _ = trained_job
    job = tmp_path / "job"
    result = run_trainer(f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS,
                         "--mixed_precision=bfloat16", "--jit_compile", "--head_epochs=1",
                         "--epochs=1", "--rotation_degrees=10", "--crop_scale=0.9",
                         "--steps_per_execution=3")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "policy mixed_bfloat16" in result.stderr
    metrics = json.loads((job / "eval/metrics.json").read_text())
    assert np.isfinite(metrics["loss"]) and metrics["records"] == 14
    assert metrics["training"]["total_steps"] == metrics["training"]["steps_run_by_last_process"]
    model = keras.saving.load_model(job / "export/model.keras", compile=False)
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model.compute_dtype == "float32"


@pytest.mark.slow
def test_48px_records_train_and_serve_a_224px_network(tmp_path):
    """--image_size is the network's side: records stored at 48 px (1/21 of the bytes) are
    resized on the device, and the exports take the records' side."""
    data, job = tmp_path / "records", tmp_path / "job"
    write_data_dir(data, {"train": balanced_counts(2), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=48, num_shards=1)
    result = run_trainer(f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS,
                         "--image_size=224", "--batch_size=4", "--head_epochs=1", "--epochs=0",
                         "--steps_per_epoch=2")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "48 px records, 7 classes), network at 224 px" in result.stderr
    labels = json.loads((job / "export/labels.json").read_text())
    assert (labels["image_size"], labels["network_image_size"]) == (48, 224)
    assert json.loads((job / "eval/metrics.json").read_text())["records"] == 7
