"""End to end: `python -m beam_preprocess` on DirectRunner, locally and through a GCS emulator."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from beam_preprocess import record_format
from beam_preprocess.record_format import MANIFEST_FILENAME, read_manifest
from tests.conftest import REPO_ROOT
from tests.support.fer_csv import random_faces, write_csv

pytestmark = pytest.mark.slow

IMAGE_SIZE = 64
SHARD_FLAGS = ["--num_shards", "3", "--num_eval_shards", "2", "--image_size", str(IMAGE_SIZE)]
BAD_LINES = ["9," + " ".join(["1"] * 2304) + ",Training", "2,1 2 3,PublicTest"]
# Sorted by class within each Usage block, as some fer2013 copies are: shards must not keep it.
USAGES = ("Training", "PublicTest", "PrivateTest")
ROWS = sorted(random_faces(60, seed=3), key=lambda row: (USAGES.index(row[2]), row[0]))


def run_job(*args, check=True, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "beam_preprocess", "--runner", "DirectRunner", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    if check and result.returncode != 0:
        pytest.fail(f"beam_preprocess failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def parsed_records(files, manifest):
    dataset = tf.data.TFRecordDataset(files).map(lambda s: record_format.parse_example(
        s, manifest.image_size, manifest.num_classes, manifest.label_distribution))
    return list(dataset.as_numpy_iterator())


def read_records(output_dir, split):
    manifest = read_manifest(str(output_dir))
    records = parsed_records(manifest.split_files(split, str(output_dir)), manifest)
    return [(r["image"], int(r["label"]), int(r["row_index"])) for r in records]


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "fer2013.csv"
    return write_csv(path, ROWS, extra_lines=BAD_LINES)


@pytest.fixture(scope="module")
def job_output(good_csv, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("out") / "records"
    run_job("--input", good_csv, "--output_dir", str(output_dir), "--max_bad_fraction", "0.05",
            *SHARD_FLAGS)
    return output_dir


def expected_split(usage):
    return record_format.USAGE_TO_SPLIT[usage]


def test_counts_per_split_and_class_equal_the_csv(job_output):
    manifest = read_manifest(str(job_output))
    for split in record_format.SPLITS:
        labels = Counter(e for e, _, u in ROWS if expected_split(u) == split)
        assert manifest.splits[split].records == sum(labels.values())
        assert manifest.splits[split].class_counts == [labels[c] for c in range(7)]
        assert len(read_records(job_output, split)) == sum(labels.values())
    assert manifest.class_names == list(record_format.FER2013_CLASS_NAMES)
    assert (manifest.image_size, manifest.channels, manifest.encoding) == (IMAGE_SIZE, 1, "png")
    assert manifest.bad_rows == 2
    assert manifest.statistics["bad_rows_by_field"] == {"emotion": 1, "pixels": 1}
    assert (manifest.label_distribution, manifest.shard_seed) == (False, 0)
    # Named after the input file by default: what models trained on it will say.
    assert (manifest.dataset_name, manifest.synthetic) == ("fer2013", False)


def test_images_labels_and_row_ids_survive(job_output):
    for split in record_format.SPLITS:
        for image, label, row_index in read_records(job_output, split):
            emotion, face, usage = ROWS[row_index]
            assert (label, expected_split(usage)) == (emotion, split)
            assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
            resized = record_format.resize_faces(face[None, ..., None], IMAGE_SIZE).numpy()
            resized = resized[0, ..., 0]
            assert np.array_equal(image[:, :, 0], resized)  # the stated interpolation, lossless
            back = cv2.resize(image[:, :, 0], (48, 48), interpolation=cv2.INTER_AREA)
            assert np.abs(back.astype(int) - face).mean() < 2


def test_shards_are_named_and_listed(job_output):
    manifest = read_manifest(str(job_output))
    assert manifest.splits["train"].files == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    names = sorted(p.name for p in Path(job_output).glob("*.tfrecord"))
    assert names == sorted(f for s in manifest.splits.values() for f in s.files)
    assert not (Path(job_output) / ".staging").exists()  # no empty folder left behind


def test_dead_letters_name_line_field_and_reason(job_output):
    lines = (Path(job_output) / record_format.BAD_ROWS_FILENAME).read_text().splitlines()
    bad = [json.loads(line) for line in lines]
    assert [(b["line_number"], b["field"]) for b in bad] == [(62, "emotion"), (63, "pixels")]
    assert bad[1]["reason"] == "expected 2304 values, found 3"
    assert bad[1]["raw_start"] == BAD_LINES[1]


def test_class_distribution_chart_is_written(job_output):
    chart = cv2.imread(str(Path(job_output) / record_format.CLASS_DISTRIBUTION_FILENAME))
    assert chart is not None and chart.shape[0] > 100


def test_rerun_writes_identical_shards(good_csv, job_output, tmp_path):
    again = tmp_path / "again"
    run_job("--input", good_csv, "--output_dir", str(again), "--max_bad_fraction", "0.05",
            *SHARD_FLAGS)
    for shard in Path(job_output).glob("*.tfrecord"):
        assert (again / shard.name).read_bytes() == shard.read_bytes()


def test_shards_carry_no_trace_of_the_class_sorted_csv_order(job_output):
    manifest = read_manifest(str(job_output))
    interleaved = []
    for split in record_format.SPLITS:
        shards = [parsed_records([str(job_output / name)], manifest)
                  for name in manifest.splits[split].files]
        for records in shards:
            rows = [int(r["row_index"]) for r in records]
            labels = [int(r["label"]) for r in records]
            assert rows != sorted(rows), (split, rows)  # not in CSV order
            assert labels != sorted(labels), (split, labels)  # so not sorted by class either
        # What a trainer interleaving the shards record by record reads:
        longest = max(len(records) for records in shards)
        interleaved += [int(records[i]["label"]) for i in range(longest)
                        for records in shards if i < len(records)]
    csv_order_changes = sum(a != b for a, b in zip(
        [row[0] for row in ROWS], [row[0] for row in ROWS[1:]], strict=False))
    interleaved_changes = sum(a != b for a, b in zip(interleaved, interleaved[1:], strict=False))
    assert interleaved_changes >= 2 * csv_order_changes  # 20 in CSV order; random: ~0.8 * 59


def test_an_unknown_flag_stops_the_job_before_anything_is_written(good_csv, tmp_path):
    output_dir = tmp_path / "records"
    result = run_job("--input", good_csv, "--output_dir", str(output_dir), "--image_szie", "48",
                     check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "beam_preprocess: error: unknown flag --image_szie (did you mean --image_size?)")
    assert not output_dir.exists()


def copy_of(output_dir, tmp_path):
    """A committed run's output, to run again over."""
    copy = tmp_path / "records"
    shutil.copytree(output_dir, copy)
    return copy


def test_too_many_bad_rows_fails_and_keeps_the_previous_output(good_csv, job_output, tmp_path):
    output_dir = copy_of(job_output, tmp_path)
    before = {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file()}

    result = run_job("--input", good_csv, "--output_dir", str(output_dir), "--num_shards", "5",
                     check=False)  # default guard 0.001 < 2/62

    assert result.returncode == 2
    assert "2 of 62 data rows (3.23%) are invalid, more than --max_bad_fraction=0.001" in (
        result.stderr)
    assert "First: line 62, field emotion: '9' is not an integer 0..6" in result.stderr
    after = {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file()}
    assert after == before
    [staging] = (output_dir / ".staging").iterdir()
    assert f"All bad rows: {staging / record_format.BAD_ROWS_FILENAME}." in result.stderr
    assert [p.name for p in staging.iterdir()] == [record_format.BAD_ROWS_FILENAME]
    assert len((staging / record_format.BAD_ROWS_FILENAME).read_text().splitlines()) == 2


def test_changing_shard_count_replaces_old_shards(good_csv, job_output, tmp_path):
    output_dir = copy_of(job_output, tmp_path)
    run_job("--input", good_csv, "--output_dir", str(output_dir), "--max_bad_fraction", "0.05",
            "--num_shards", "2", "--num_eval_shards", "1", "--image_size", "64",
            "--shard_seed", "7", "--dataset_name", "fer2013_synthetic_rerun")
    assert sorted(p.name for p in output_dir.glob("train-*")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    manifest = read_manifest(str(output_dir))
    assert manifest.shard_seed == 7
    assert (manifest.dataset, manifest.synthetic) == ("fer2013_synthetic_rerun", True)
    assert sorted(r[2] for r in read_records(output_dir, "train")) == [
        i for i, row in enumerate(ROWS) if row[2] == "Training"]


def test_wrong_file_fails_before_writing_anything(tmp_path):
    not_fer = tmp_path / "other.csv"
    not_fer.write_text("id,name\n1,x\n")
    output_dir = tmp_path / "records"
    result = run_job("--input", str(not_fer), "--output_dir", str(output_dir), check=False)
    assert result.returncode == 2
    assert f"{not_fer}, line 1: header ['id', 'name'] is not a fer2013 header" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output_dir.exists()


def test_missing_input_is_a_clear_error(tmp_path):
    result = run_job("--input", str(tmp_path / "nope.csv"), "--output_dir", str(tmp_path / "o"),
                     check=False)
    assert result.returncode == 2
    assert "nope.csv: no such file" in result.stderr


FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")
FERPLUS_ROWS = random_faces(24, seed=5)


def ferplus_votes(row_index):
    """A deterministic vote pattern covering kept, no-majority and not-a-face rows."""
    kind = row_index % 4
    votes = [0] * 10
    if kind == 0:
        votes[row_index % 8], votes[(row_index + 1) % 8] = 9, 1  # the lone vote is not a label
    elif kind == 1:
        votes[1], votes[3], votes[8] = 6, 3, 1  # 'unknown' is not an emotion
    elif kind == 2:
        votes[0], votes[1] = 5, 5  # dropped: no majority
    else:
        votes[9] = 10  # dropped: not a face
    return votes


def ferplus_lines(rows):
    return [FERPLUS_HEADER] + [f"{usage},fer{i:07d}.png," + ",".join(map(str, ferplus_votes(i)))
                               for i, (_, _, usage) in enumerate(rows)]


@pytest.fixture(scope="module")
def ferplus_inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("ferplus")
    csv_path = write_csv(work / "fer2013.csv", FERPLUS_ROWS)
    ferplus_path = work / "fer2013new.csv"
    ferplus_path.write_text("\n".join(ferplus_lines(FERPLUS_ROWS)) + "\n")
    return csv_path, ferplus_path


def run_ferplus_job(ferplus_inputs, output_dir, ferplus_path=None, check=True):
    csv_path, aligned_path = ferplus_inputs
    return run_job("--input", csv_path, "--output_dir", str(output_dir), "--labels", "ferplus",
                   "--ferplus_csv", str(ferplus_path or aligned_path), *SHARD_FLAGS, check=check)


@pytest.fixture(scope="module")
def ferplus_output(ferplus_inputs, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ferplus_out") / "records"
    run_ferplus_job(ferplus_inputs, output_dir)
    return output_dir


def ferplus_records(output_dir):
    manifest = read_manifest(str(output_dir))
    return [r for split in record_format.SPLITS
            for r in parsed_records(manifest.split_files(split, str(output_dir)), manifest)]


def test_ferplus_labels_replace_fer2013_labels(ferplus_output):
    manifest = read_manifest(str(ferplus_output))
    assert manifest.class_names == list(record_format.FERPLUS_CLASS_NAMES)
    assert manifest.dropped_rows == 12
    records = ferplus_records(ferplus_output)
    assert len(records) == 12
    for record in records:
        row_index = int(record["row_index"])
        assert int(record["label"]) == (row_index % 8 if row_index % 4 == 0 else 1)


def test_ferplus_records_carry_the_vote_distribution(ferplus_output):
    assert read_manifest(str(ferplus_output)).label_distribution is True
    records = ferplus_records(ferplus_output)
    for record in records:
        votes = np.array(ferplus_votes(int(record["row_index"]))[:8], dtype=np.float64)
        distribution = record[record_format.LABEL_DISTRIBUTION_KEY]
        assert distribution.dtype == np.float32 and distribution.shape == (8,)
        np.testing.assert_allclose(distribution, votes / votes.sum(), rtol=1e-6)
        assert int(np.argmax(distribution)) == int(record["label"])
    assert {round(float(r[record_format.LABEL_DISTRIBUTION_KEY][1]), 4) for r in records
            if int(r["row_index"]) % 4 == 1} == {round(6 / 9, 4)}


def test_a_ferplus_file_shifted_by_one_line_fails_the_job_naming_the_cause(
        ferplus_inputs, tmp_path):
    lines = ferplus_lines(FERPLUS_ROWS)
    shifted = tmp_path / "fer2013new_shifted.csv"
    shifted.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # row 2's line deleted
    output_dir = tmp_path / "records"

    result = run_ferplus_job(ferplus_inputs, output_dir, ferplus_path=shifted, check=False)

    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert "22 of 24 data rows (91.67%) are invalid" in message
    assert ("First: line 4, field ferplus_csv Image name: image name fer0000003.png does not "
            "match row 2.") in message
    assert not (output_dir / MANIFEST_FILENAME).exists()
    assert not list(output_dir.rglob("*.tfrecord"))
    [dead_letters] = output_dir.glob(".staging/*/bad_rows.jsonl")
    reasons = [json.loads(line)["reason"] for line in dead_letters.read_text().splitlines()]
    assert reasons[-1] == "fer2013 line 25 has no FER+ line 25"


def test_multi_processing_writes_the_same_shards(good_csv, job_output, tmp_path):
    output_dir = tmp_path / "mp"
    run_job("--input", good_csv, "--output_dir", str(output_dir), "--max_bad_fraction", "0.05",
            "--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
            *SHARD_FLAGS)
    for shard in Path(job_output).glob("*.tfrecord"):
        assert (output_dir / shard.name).read_bytes() == shard.read_bytes()


def test_gcs_input_and_output(gcs_emulator, gcs_client, good_csv, job_output):
    bucket = gcs_client.bucket(gcs_emulator)
    bucket.blob("in/fer2013.csv").upload_from_filename(good_csv)

    run_job("--input", f"gs://{gcs_emulator}/in/fer2013.csv",
            "--output_dir", f"gs://{gcs_emulator}/records", "--max_bad_fraction", "0.05",
            *SHARD_FLAGS, timeout=180)

    names = {b.name for b in gcs_client.list_blobs(gcs_emulator, prefix="records/")}
    manifest = json.loads(bucket.blob(f"records/{MANIFEST_FILENAME}").download_as_bytes())
    local = json.loads((Path(job_output) / MANIFEST_FILENAME).read_text())
    assert manifest["splits"] == local["splits"]
    assert manifest["input_path"] == f"gs://{gcs_emulator}/in/fer2013.csv"
    for shard in Path(job_output).glob("*.tfrecord"):
        assert bucket.blob(f"records/{shard.name}").download_as_bytes() == shard.read_bytes()
    assert not [n for n in names if "/.staging/" in n and not n.endswith("/")]


DRIVER_DIES_BEFORE_COMMIT = """
import sys
from beam_preprocess import __main__ as command, pipeline

def driver_dies(config):
    sys.exit(137)

pipeline.finish_run = driver_dies
sys.argv = ["beam_preprocess", *sys.argv[1:]]
sys.exit(command.main())
"""


def finish(*args):
    return subprocess.run([sys.executable, "-m", "beam_preprocess.finish", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_a_run_whose_driver_died_before_its_commit_is_committed_by_finish(
        good_csv, job_output, tmp_path):
    output_dir = tmp_path / "records"
    died = subprocess.run(
        [sys.executable, "-c", DRIVER_DIES_BEFORE_COMMIT, "--runner", "DirectRunner",
         "--input", str(good_csv), "--output_dir", str(output_dir), "--max_bad_fraction",
         "0.05", *SHARD_FLAGS], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert died.returncode == 137, died.stderr[-3000:]
    assert not (output_dir / MANIFEST_FILENAME).exists()
    [staged] = (output_dir / ".staging").iterdir()

    done = finish("--output_dir", str(output_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Committed run {staged.name}" in done.stderr
    local = json.loads((Path(job_output) / MANIFEST_FILENAME).read_text())
    assert json.loads((output_dir / MANIFEST_FILENAME).read_text())["splits"] == local["splits"]
    for shard in Path(job_output).glob("*.tfrecord"):
        assert (output_dir / shard.name).read_bytes() == shard.read_bytes()
    assert not (output_dir / ".staging").exists()  # no empty folder left behind

    again = finish("--output_dir", str(output_dir), "--run_id", staged.name)
    assert again.returncode == 2
    assert f"looked for run {staged.name}, found no staged run" in again.stderr
    assert "Traceback" not in again.stderr
