"""The driver's commit: run once after the pipeline, and safe to run again (idempotent).

The staged files come from the real pipeline (pipeline.build_pipeline on DirectRunner, in this
process); every test commits a fresh copy of them.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_preprocess import commit, csv_rows, pipeline
from beam_preprocess.job_config import JobConfig
from beam_preprocess.record_format import MANIFEST_FILENAME, read_manifest
from beam_preprocess.row_counts import TooManyBadRowsError
from tests.support.fer_csv import random_faces, write_csv

BAD_LINES = ["9," + " ".join(["1"] * 2304) + ",Training", "2,1 2 3,PublicTest"]


def job_config(csv_path, output_dir, **overrides):
    settings = dict(input_path=str(csv_path), output_dir=str(output_dir), image_size=32,
                    num_train_shards=4, num_eval_shards=2, label_set="fer2013",
                    ferplus_path=None, max_bad_fraction=0.1, run_id="run0")
    return JobConfig(**{**settings, **overrides})


def run_pipeline(config):
    layout = csv_rows.parse_header(Path(config.input_path).read_text().splitlines()[0])
    with beam.Pipeline(options=PipelineOptions(["--runner", "DirectRunner"])) as p:
        pipeline.build_pipeline(p, config, layout)


@pytest.fixture(scope="module")
def staged_output(tmp_path_factory):
    """An output dir whose .staging/run0 holds a finished pipeline's files, not committed."""
    work = tmp_path_factory.mktemp("staged")
    # 11 rows per split: every one of the 4 train and 2 + 2 eval shards gets rows.
    csv_path = write_csv(work / "fer2013.csv", random_faces(33, seed=4), extra_lines=BAD_LINES)
    config = job_config(csv_path, work / "records")
    run_pipeline(config)
    return config


@pytest.fixture()
def config(staged_output, tmp_path):
    """A fresh copy of the staged run, in this test's own output dir."""
    output_dir = tmp_path / "records"
    shutil.copytree(staged_output.output_dir, output_dir)
    return dataclasses.replace(staged_output, output_dir=str(output_dir))


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def test_the_pipeline_commits_nothing_itself(config):
    assert not (Path(config.output_dir) / MANIFEST_FILENAME).exists()
    staged = {p.name for p in Path(config.staging_dir).iterdir()}
    assert {"row_counts.json", "train-00000-of-00004.tfrecord"} <= staged


def test_committing_twice_leaves_byte_identical_output(config):
    staged = commit.read_staged_run(config.staging)
    commit.commit(config, staged)
    first = snapshot(config.output_dir)
    commit.commit(config, staged)  # e.g. a driver that died after the moves and committed again
    assert snapshot(config.output_dir) == first
    manifest = read_manifest(config.output_dir)
    assert manifest.bad_rows == 2 and manifest.splits["train"].records == 11
    for shard in (s for split in manifest.splits.values() for s in split.shards):
        assert (Path(config.output_dir) / shard.name).stat().st_size == shard.bytes > 0


def test_a_commit_interrupted_after_some_moves_completes_without_emptying_shards(config):
    staged = commit.read_staged_run(config.staging)
    reference = dataclasses.replace(config, output_dir=config.output_dir + "_clean")
    shutil.copytree(config.output_dir, reference.output_dir)
    commit.commit(reference, commit.read_staged_run(reference.staging))
    for name in ("train-00001-of-00004.tfrecord", "test-00000-of-00002.tfrecord"):
        Path(config.staging_dir, name).rename(Path(config.output_dir, name))  # moved, then died
    commit.commit(config, staged)
    assert snapshot(config.output_dir) == snapshot(reference.output_dir)


def test_a_shard_with_rows_whose_file_is_gone_fails_the_commit_instead_of_going_empty(config):
    staged = commit.read_staged_run(config.staging)
    Path(config.staging_dir, "train-00002-of-00004.tfrecord").unlink()
    with pytest.raises(commit.CommitError, match="train-00002-of-00004.tfrecord: the staged file"):
        commit.commit(config, staged)
    assert not Path(config.output_dir, "train-00002-of-00004.tfrecord").exists()
    assert not Path(config.output_dir, MANIFEST_FILENAME).exists()


def test_emptiness_comes_from_the_shard_results(config):
    staged = commit.read_staged_run(config.staging)
    without_test_rows = dataclasses.replace(
        staged, shard_results=tuple(r for r in staged.shard_results if r.split != "test"),
        counts=dataclasses.replace(staged.counts, faces=staged.counts.faces - 11))
    manifest = commit.commit(config, without_test_rows)
    assert [s.records for s in manifest.splits["test"].shards] == [0, 0]
    assert Path(config.output_dir, "test-00000-of-00002.tfrecord").read_bytes() == b""


def test_results_that_do_not_add_up_to_the_counted_faces_fail_the_commit(config):
    staged = commit.read_staged_run(config.staging)
    with pytest.raises(commit.CommitError, match="the shard results hold 22 records but the "
                                                 "pipeline counted 33 faces"):
        commit.commit(config, dataclasses.replace(staged, shard_results=tuple(
            r for r in staged.shard_results if r.split != "test")))
    assert not Path(config.output_dir, MANIFEST_FILENAME).exists()


def test_dead_letters_are_merged_in_line_order_once(config):
    first = commit.read_staged_run(config.staging)
    lines = [json.loads(line) for line in first.dead_letters.decode().splitlines()]
    assert [(b["line_number"], b["field"]) for b in lines] == [(35, "emotion"), (36, "pixels")]
    assert not list(Path(config.staging_dir).glob("dead_letters-*"))
    assert commit.read_staged_run(config.staging) == first


def test_too_many_bad_rows_commit_nothing_and_keep_only_the_dead_letters(config):
    strict = dataclasses.replace(config, max_bad_fraction=0.01)
    with pytest.raises(TooManyBadRowsError) as failure:
        commit.finish_run(strict)
    assert str(failure.value).endswith(
        f"2 of 35 data rows (5.71%) are invalid, more than --max_bad_fraction=0.01. First: line "
        f"35, field emotion: '9' is not an integer 0..6. All bad rows: "
        f"{config.staging_dir}/bad_rows.jsonl. No output was committed.")
    assert [p.name for p in Path(config.staging_dir).iterdir()] == ["bad_rows.jsonl"]
    assert [p.name for p in Path(config.output_dir).iterdir()] == [".staging"]


def test_finish_run_removes_the_staging_directory(config):
    commit.finish_run(config)
    assert not Path(config.staging_dir).exists()
    assert read_manifest(config.output_dir).splits["validation"].records == 11
