"""Each transform of beam_preprocess.transforms on a handful of rows, with Beam's TestPipeline."""

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_preprocess import csv_rows, record_format, shard_writer
from beam_preprocess.csv_rows import BadRow, FaceRow
from beam_preprocess.ferplus import DroppedRow
from beam_preprocess.row_counts import RowCounts
from beam_preprocess.transforms import (
    CountRows,
    GroupIntoShards,
    JoinFerPlusLabels,
    ParseRows,
    ReadNumberedLines,
    WriteJsonLines,
    WriteShardFiles,
)
from tests.support.fer_csv import random_faces

FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")
NUM_SHARDS = {"train": 3, "validation": 1, "test": 1}


def beam_pipeline():
    return BeamTestPipeline(options=PipelineOptions(["--runner", "DirectRunner"]))


def face_row(row_index, label=0, split="train", seed=0):
    pixels = random_faces(1, seed=seed + row_index)[0][1]
    return FaceRow(row_index, split, label, pixels.tobytes())


def test_read_numbered_lines_gives_every_line_once_with_its_number(tmp_path):
    lines = ["emotion,pixels,Usage\n"] + [f"{i},x,Training\r\n" for i in range(30)] + ["\n", "z"]
    path = tmp_path / "f.csv"
    path.write_bytes("".join(lines).encode())
    with beam_pipeline() as p:
        numbered = p | ReadNumberedLines(str(path), range_bytes=7)
        assert_that(numbered, equal_to(list(enumerate(lines, start=1))))


def test_parse_rows_separates_faces_from_bad_rows_and_skips_header_and_blanks():
    pixels = " ".join(["7"] * 2304)
    lines = [(1, "emotion,pixels,Usage\n"), (2, f"3,{pixels},Training\n"), (3, "\r\n"),
             (4, f"9,{pixels},Training\n"), (5, f"1,{pixels},PrivateTest\n"),
             (6, "2,1 2 3,PublicTest\n")]
    layout = csv_rows.parse_header("emotion,pixels,Usage")
    with beam_pipeline() as p:
        parsed = (p | beam.Create(lines)
                  | beam.ParDo(ParseRows(layout)).with_outputs(ParseRows.BAD, main="faces"))
        assert_that(parsed.faces | "Faces" >> beam.Map(lambda r: (r.row_index, r.split, r.label)),
                    equal_to([(0, "train", 3), (3, "test", 1)]), label="CheckFaces")
        assert_that(parsed.bad | "Bad" >> beam.Map(lambda r: (r.line_number, r.field)),
                    equal_to([(4, "emotion"), (6, "pixels")]), label="CheckBadRows")


def ferplus_file(tmp_path, lines):
    path = tmp_path / "fer2013new.csv"
    path.write_text("\n".join([FERPLUS_HEADER, *lines]) + "\n")
    return str(path)


def test_join_ferplus_labels_checks_every_pair(tmp_path):
    # fer2013: faces at rows 0-4 and 7, row 5 was a bad row, row 6 does not exist.
    faces = [face_row(i) for i in (0, 1, 2, 3, 4, 7)]
    fer2013_bad = [BadRow(7, "pixels", "expected 2304 values, found 3", "")]
    path = ferplus_file(tmp_path, [
        "Training,fer0000000.png,0,7,0,3,0,0,0,0,0,0",   # row 0: happiness, 70/30
        "Training,fer0000001.png,5,5,0,0,0,0,0,0,0,0",   # row 1: no majority -> dropped
        "PublicTest,fer0000002.png,9,1,0,0,0,0,0,0,0,0",  # row 2: another split
        "Training,fer0000004.png,9,1,0,0,0,0,0,0,0,0",   # row 3: another row's line
        "Training,fer0000004.png,1,0,0,0,0,0,9,0,0,0",   # row 4: fear, 10% neutral
        "Training,fer0000005.png,10,0,0,0,0,0,0,0,0,0",  # row 5: its fer2013 row was bad
        "Training,fer0000006.png,10,0,0,0,0,0,0,0,0,0",  # row 6: no fer2013 row
    ])                                                   # row 7: no FER+ line
    with beam_pipeline() as p:
        joined = ((p | "Faces" >> beam.Create(faces), p | "Bad" >> beam.Create(fer2013_bad))
                  | JoinFerPlusLabels(path))
        assert_that(joined.faces | "Labels" >> beam.Map(
            lambda r: (r.row_index, r.label, tuple(round(x, 6) for x in r.label_distribution))),
            equal_to([(0, 1, (0, 0.7, 0, 0.3, 0, 0, 0, 0)), (4, 6, (0.1, 0, 0, 0, 0, 0, 0.9, 0))]),
            label="CheckFaces")
        assert_that(joined.bad | "Why" >> beam.Map(lambda r: (r.line_number, r.field, r.reason)),
                    equal_to([
                        (4, "ferplus_csv Usage",
                         "FER+ line 4: Usage PublicTest but fer2013 line 4 is Training"),
                        (5, "ferplus_csv Image name",
                         "image name fer0000004.png does not match row 3"),
                        (8, "ferplus_csv row", "FER+ line 8 has no fer2013 row at line 8"),
                        (9, "ferplus_csv row", "fer2013 line 9 has no FER+ line 9"),
                    ]), label="CheckBadRows")
        assert_that(joined.dropped, equal_to([DroppedRow(1)]), label="CheckDropped")


def test_count_rows_counts_each_outcome_and_finds_the_first_bad_row():
    bad = [BadRow(9, "pixels", "r1", ""), BadRow(4, "emotion", "r2", ""),
           BadRow(30, "pixels", "r3", "")]
    with beam_pipeline() as p:
        counts = ((p | "Faces" >> beam.Create([face_row(i) for i in range(5)]),
                   p | "Bad" >> beam.Create(bad),
                   p | "Dropped" >> beam.Create([DroppedRow(6), DroppedRow(7)]))
                  | CountRows())
        assert_that(counts, equal_to([RowCounts(
            faces=5, bad=3, dropped=2, bad_by_field={"pixels": 2, "emotion": 1},
            first_bad=bad[1])]))


def test_count_rows_of_nothing_is_one_zero_count():
    with beam_pipeline() as p:
        empty = [p | f"Empty{i}" >> beam.Create([]) for i in range(3)]
        assert_that(tuple(empty) | CountRows(), equal_to([RowCounts()]))


def test_group_into_shards_puts_each_row_in_the_shard_its_hash_picks():
    rows = [face_row(i, split="train" if i < 20 else "test") for i in range(26)]

    def expected_shard(row):
        key = shard_writer.shard_sort_key(row.row_index, 5)
        return row.split, shard_writer.shard_index(key, NUM_SHARDS[row.split])

    expected = {}
    for row in rows:
        expected.setdefault(expected_shard(row), []).append(row.row_index)
    with beam_pipeline() as p:
        grouped = p | beam.Create(rows) | GroupIntoShards(NUM_SHARDS, seed=5)
        assert_that(grouped | beam.MapTuple(
            lambda shard, keyed: (shard, sorted(row.row_index for _, row in keyed))),
            equal_to(sorted(expected.items())))
    assert len({shard for shard in expected if shard[0] == "train"}) == 3


def read_shard(path, num_classes=8, distribution=False):
    parse = lambda s: record_format.parse_example(  # noqa: E731
        s, 64, num_classes=num_classes, label_distribution=distribution)
    return list(tf.data.TFRecordDataset(str(path)).map(parse).as_numpy_iterator())


def shard_input(rows, seed=0):
    return ("train", 1), [(shard_writer.shard_sort_key(r.row_index, seed), r) for r in rows]


def write_shards_fn(staging, max_bad_fraction=0.1):
    return WriteShardFiles(str(staging), 64, NUM_SHARDS, num_classes=8,
                           max_bad_fraction=max_bad_fraction)


def test_write_shard_files_writes_the_rows_in_hash_order(tmp_path):
    rows = [FaceRow(i, "train", i % 8, face_row(i).pixels, (0.125,) * 8) for i in range(9)]
    with beam_pipeline() as p:
        results = (p | beam.Create([shard_input(rows)])
                   | beam.ParDo(write_shards_fn(tmp_path),
                                counts=beam.pvalue.AsSingleton(p | "Counts" >> beam.Create(
                                    [RowCounts(faces=9)]))))
        assert_that(results | beam.Map(lambda r: (r.filename, r.records, r.class_counts)),
                    equal_to([("train-00001-of-00003.tfrecord", 9, (2, 1, 1, 1, 1, 1, 1, 1))]))
    records = read_shard(tmp_path / "train-00001-of-00003.tfrecord", distribution=True)
    order = sorted(range(9), key=lambda i: shard_writer.shard_sort_key(i, 0))
    assert [int(r["row_index"]) for r in records] == order
    for record in records:
        row = rows[int(record["row_index"])]
        expected = record_format.resize_faces(row.image()[None, ..., None], 64).numpy()[0]
        assert np.array_equal(record["image"], expected)
        assert int(record["label"]) == row.label
        assert record["label_distribution"].tolist() == [0.125] * 8


def test_write_shard_files_encodes_nothing_when_the_guard_fails(tmp_path):
    rows = [face_row(i) for i in range(4)]
    with beam_pipeline() as p:
        results = (p | beam.Create([shard_input(rows)])
                   | beam.ParDo(write_shards_fn(tmp_path, max_bad_fraction=0.2),
                                counts=beam.pvalue.AsSingleton(p | "Counts" >> beam.Create(
                                    [RowCounts(faces=4, bad=1)]))))  # 1 of 5 = 0.2: passes
        assert_that(results | beam.Map(lambda r: r.records), equal_to([4]))
    with beam_pipeline() as p:
        results = (p | beam.Create([shard_input(rows)])
                   | beam.ParDo(write_shards_fn(tmp_path / "failed", max_bad_fraction=0.2),
                                counts=beam.pvalue.AsSingleton(p | "Counts" >> beam.Create(
                                    [RowCounts(faces=4, bad=2)]))))  # 2 of 6 > 0.2
        assert_that(results, equal_to([]))
    assert not (tmp_path / "failed").exists()


def test_a_retried_shard_write_leaves_no_duplicate_records(tmp_path):
    rows = [face_row(i, label=i % 7) for i in range(6)]
    fn = write_shards_fn(tmp_path)
    fn.setup()
    first = list(fn.process(shard_input(rows), RowCounts(faces=6)))
    path = tmp_path / "train-00001-of-00003.tfrecord"
    written = path.read_bytes()
    second = list(fn.process(shard_input(rows), RowCounts(faces=6)))  # the bundle, retried
    assert second == first and first[0].records == 6
    assert path.read_bytes() == written
    assert sorted(int(r["row_index"]) for r in read_shard(path)) == list(range(6))


class Item:
    def __init__(self, n):
        self.n = n

    def to_dict(self):
        return {"n": self.n}


def test_write_json_lines_writes_one_object_per_line(tmp_path):
    with beam_pipeline() as p:
        _ = p | "Many" >> beam.Create([Item(i) for i in range(5)]) | "WriteMany" >> (
            WriteJsonLines(str(tmp_path / "many")))
        _ = p | "One" >> beam.Create([Item(42)]) | "WriteOne" >> (
            WriteJsonLines(str(tmp_path / "one"), ".json", single_file=True))
    lines = [line for f in tmp_path.glob("many-*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(5))
    assert json.loads((tmp_path / "one.json").read_text()) == {"n": 42}
    assert sorted(p.name for p in Path(tmp_path).iterdir() if not p.name.startswith("many-")) == [
        "one.json"]
