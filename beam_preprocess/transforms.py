"""The Beam transforms of the preprocessing job; pipeline.py wires them together.

    ReadNumberedLines   text file -> (line_number, line), read in parallel byte ranges
    ParseRows           fer2013 (line_number, line) -> FaceRow, or BadRow on "bad"
    JoinFerPlusLabels   (faces, fer2013 bad rows) -> FER+-labelled faces, "bad", "dropped"
    CountRows           (faces, bad, dropped) -> one RowCounts
    GroupIntoShards     FaceRow -> ((split, shard_index), [(sort_key, FaceRow), ...])
    WriteShardFiles     grouped rows -> a staged TFRecord file each, and its ShardResult
    WriteJsonLines      dicts -> JSON-lines text files (results and dead letters for the driver)

Only small things are shuffled: 48x48 faces are 2.3 kB. The 224x224 payload is made by
WriteShardFiles, after the last shuffle (platform notes: memory rule).
"""

from __future__ import annotations

import json
import posixpath

import apache_beam as beam

from beam_preprocess import csv_rows, ferplus, numbered_lines, shard_writer
from beam_preprocess.csv_rows import BadRow, FaceRow
from beam_preprocess.gcs_emulator import skip_credential_lookup_when_emulated
from beam_preprocess.record_format import shard_filename
from beam_preprocess.row_counts import RowCounts

_NAMESPACE = "beam_preprocess"


class _FileDoFn(beam.DoFn):
    """A DoFn that reads or writes files: in a worker process of its own (multi-processing
    DirectRunner, Dataflow) the emulator shim must run before Beam's GCS I/O looks for
    credentials; without STORAGE_EMULATOR_HOST it does nothing."""

    def setup(self):
        skip_credential_lookup_when_emulated()


class _CountNewlines(_FileDoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, byte_range: numbered_lines.ByteRange):
        yield byte_range.index, numbered_lines.count_newlines(self._path, byte_range)


class _NumberLines(_FileDoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, byte_range: numbered_lines.ByteRange, newline_counts: dict[int, int]):
        before = sum(n for i, n in newline_counts.items() if i < byte_range.index)
        yield from numbered_lines.read_numbered_lines(self._path, byte_range, before)


class ReadNumberedLines(beam.PTransform):
    """PBegin -> PCollection[(line_number, line)] for every line of `path`, header included.

    Beam's text sources do not say which line a record came from; dead letters and the FER+
    join need it. Two cheap passes over byte ranges (count newlines, then number) give it
    without reading the file on one worker (see numbered_lines).
    """

    def __init__(self, path: str, range_bytes: int = numbered_lines.DEFAULT_RANGE_BYTES):
        super().__init__()
        self._path = path
        self._ranges = numbered_lines.plan_byte_ranges(path, range_bytes)

    def expand(self, pbegin):
        ranges = (pbegin
                  | "ByteRanges" >> beam.Create(self._ranges)
                  | "SpreadRanges" >> beam.Reshuffle())
        newline_counts = ranges | "CountNewlines" >> beam.ParDo(_CountNewlines(self._path))
        return ranges | "NumberLines" >> beam.ParDo(
            _NumberLines(self._path), newline_counts=beam.pvalue.AsDict(newline_counts))


class ParseRows(beam.DoFn):
    """(line_number, line) -> FaceRow, or BadRow on the 'bad' output. Skips header and blanks."""

    BAD = "bad"

    def __init__(self, layout: csv_rows.ColumnLayout):
        self._layout = layout
        self._rows = beam.metrics.Metrics.counter(_NAMESPACE, "rows_read")
        self._bad = beam.metrics.Metrics.counter(_NAMESPACE, "bad_rows")

    def process(self, numbered_line):
        line_number, line = numbered_line
        if line_number == 1 or csv_rows.is_blank(line):
            return
        self._rows.inc()
        row = csv_rows.parse_row(line, line_number, self._layout)
        if isinstance(row, BadRow):
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(self.BAD, row)
        else:
            yield row


def _parse_ferplus_line(numbered_line):
    """(line_number, line) -> (fer2013 row index, FerPlusRow or BadRow); skips header, blanks."""
    line_number, line = numbered_line
    if line_number == 1 or csv_rows.is_blank(line):
        return
    yield line_number - 2, ferplus.parse_ferplus_row(line, line_number)


class _JoinFerPlusRow(beam.DoFn):
    """(row_index, {faces, fer2013_bad, ferplus}) -> one outcome per row index.

    A row index with a fer2013 bad row yields nothing here: that row is already a dead letter.
    """

    BAD = "bad"
    DROPPED = "dropped"

    def __init__(self):
        self._bad = beam.metrics.Metrics.counter(_NAMESPACE, "ferplus_bad_rows")
        self._dropped = beam.metrics.Metrics.counter(_NAMESPACE, "ferplus_dropped_rows")

    def process(self, joined):
        _, sides = joined
        faces, ferplus_rows = list(sides["faces"]), list(sides["ferplus"])
        if list(sides["fer2013_bad"]):
            return
        outcome = _join_outcome(faces[0] if faces else None,
                                ferplus_rows[0] if ferplus_rows else None)
        if isinstance(outcome, BadRow):
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(self.BAD, outcome)
        elif isinstance(outcome, ferplus.DroppedRow):
            self._dropped.inc()
            yield beam.pvalue.TaggedOutput(self.DROPPED, outcome)
        else:
            yield outcome


def _join_outcome(face: FaceRow | None, ferplus_row: ferplus.FerPlusRow | BadRow | None
                  ) -> FaceRow | BadRow | ferplus.DroppedRow:
    if face is None:
        # A FER+ line with no fer2013 row: a malformed line or one past fer2013's end.
        if isinstance(ferplus_row, BadRow):
            return ferplus_row
        return ferplus.missing_fer2013_row(ferplus_row)
    if ferplus_row is None:
        return ferplus.missing_ferplus_row(face)
    if isinstance(ferplus_row, BadRow):
        return ferplus_row  # the face cannot be labelled: its FER+ line is the dead letter
    return ferplus.join_face(face, ferplus_row)


class JoinFerPlusLabels(beam.PTransform):
    """(faces, fer2013 bad rows) -> faces with FER+ labels on the main output, 'bad', 'dropped'.

    A CoGroupByKey on the row index, so that every face meets its own FER+ line (or learns it
    has none); pairs that do not belong together become dead letters (ferplus.join_face).
    """

    def __init__(self, ferplus_path: str):
        super().__init__()
        self._path = ferplus_path

    def expand(self, faces_and_bad_rows):
        faces, fer2013_bad = faces_and_bad_rows
        ferplus_rows = (faces.pipeline
                        | "ReadFerPlusCsv" >> ReadNumberedLines(self._path)
                        | "ParseFerPlus" >> beam.FlatMap(_parse_ferplus_line))
        return ({
            "faces": faces | "KeyFaces" >> beam.WithKeys(lambda row: row.row_index),
            "fer2013_bad": fer2013_bad | "KeyBadRows" >> beam.Map(
                lambda row: (row.line_number - 2, None)),
            "ferplus": ferplus_rows,
        }
            | "JoinByRowIndex" >> beam.CoGroupByKey()
            | "CheckAndRelabel" >> beam.ParDo(_JoinFerPlusRow()).with_outputs(
                _JoinFerPlusRow.BAD, _JoinFerPlusRow.DROPPED, main="faces"))


class _CountRowsFn(beam.CombineFn):
    def create_accumulator(self):
        return RowCounts()

    def add_input(self, counts, outcome):
        return counts.add(outcome)

    def merge_accumulators(self, accumulators):
        merged = RowCounts()
        for counts in accumulators:
            merged.merge(counts)
        return merged

    def extract_output(self, counts):
        return counts


class CountRows(beam.PTransform):
    """(faces, bad rows, dropped rows) -> a single RowCounts (also when all three are empty).

    Combined per bundle before the shuffle, so only small partial counts move, never the rows.
    """

    def expand(self, outcomes):
        return (outcomes
                | "AllOutcomes" >> beam.Flatten()
                | "Count" >> beam.CombineGlobally(_CountRowsFn()))


class GroupIntoShards(beam.PTransform):
    """FaceRow -> ((split, shard_index), [(sort_key, FaceRow), ...]), by a seeded row hash."""

    def __init__(self, num_shards: dict[str, int], seed: int):
        super().__init__()
        self._num_shards = num_shards
        self._seed = seed

    def expand(self, faces):
        num_shards, seed = self._num_shards, self._seed

        def key_by_shard(row: FaceRow):
            sort_key = shard_writer.shard_sort_key(row.row_index, seed)
            shard = shard_writer.shard_index(sort_key, num_shards[row.split])
            return (row.split, shard), (sort_key, row)

        return (faces
                | "KeyByShard" >> beam.Map(key_by_shard)
                | "GroupShards" >> beam.GroupByKey())


class WriteShardFiles(_FileDoFn):
    """((split, shard), keyed rows) -> ShardResult, writing `<staging_dir>/<shard file>`.

    Takes the RowCounts as a side input and writes nothing when the bad-row guard fails, so a
    wrong input costs no image encoding: Beam computes the side input before this step runs.
    """

    def __init__(self, staging_dir: str, image_size: int, num_shards: dict[str, int],
                 num_classes: int, max_bad_fraction: float):
        self._staging_dir = staging_dir
        self._image_size = image_size
        self._num_shards = num_shards
        self._num_classes = num_classes
        self._max_bad_fraction = max_bad_fraction
        self._records = beam.metrics.Metrics.counter(_NAMESPACE, "records_written")

    def process(self, grouped_rows, counts: RowCounts):
        if counts.too_many_bad(self._max_bad_fraction):
            return
        (split, shard), keyed_rows = grouped_rows
        filename = shard_filename(split, shard, self._num_shards[split])
        path = posixpath.join(self._staging_dir, filename)
        result = shard_writer.write_shard_file(path, split, filename, keyed_rows,
                                               self._image_size, self._num_classes)
        self._records.inc(result.records)
        yield result


class WriteJsonLines(beam.PTransform):
    """Elements with to_dict() -> JSON lines under `prefix` (one file when `single_file`).

    Beam's WriteToText writes to temporary files and renames them when the step is final, so a
    retried bundle leaves no duplicate lines.
    """

    def __init__(self, prefix: str, suffix: str = ".jsonl", single_file: bool = False):
        super().__init__()
        self._prefix = prefix
        self._suffix = suffix
        self._single_file = single_file

    def expand(self, elements):
        sharding = {"num_shards": 1, "shard_name_template": ""} if self._single_file else {}
        return (elements
                | "ToJson" >> beam.Map(lambda element: json.dumps(element.to_dict()))
                | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=self._suffix,
                                                 **sharding))
