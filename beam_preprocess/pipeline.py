"""The preprocessing pipeline: fer2013.csv -> validated, sharded TFRecords + manifest.

    python -m beam_preprocess --input fer2013.csv --output_dir out/ [--runner DirectRunner]

Our flags are absl flags (also from --flagfile); every other flag is a Beam pipeline option and
is passed to Beam untouched, so the same command runs on Dataflow with --runner DataflowRunner.
"""

from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_preprocess import csv_rows, ferplus
from beam_preprocess.commit import finish_run
from beam_preprocess.csv_rows import BadRow, FaceRow
from beam_preprocess.job_config import JobConfig
from beam_preprocess.numbered_lines import ReadNumberedLines, read_first_line
from beam_preprocess.record_format import DEFAULT_IMAGE_SIZE
from beam_preprocess.shard_writer import WriteShard, shard_key

_LOG = logging.getLogger(__name__)

_INPUT = flags.DEFINE_string("input", None, "fer2013.csv: a local path or gs:// URI.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where shards and manifest go (or gs://).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", DEFAULT_IMAGE_SIZE, "Side of the stored faces, resized bilinearly from 48.",
    lower_bound=1)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 16, "Shards of the train split (>= 8 so 8 distributed readers each get files).",
    lower_bound=1)
_NUM_EVAL_SHARDS = flags.DEFINE_integer(
    "num_eval_shards", 4, "Shards of each of the validation and test splits.", lower_bound=1)
_LABELS = flags.DEFINE_enum(
    "labels", "fer2013", ["fer2013", "ferplus"],
    "fer2013: the CSV's 7 emotions. ferplus: FER+ 8-class majority votes from --ferplus_csv.")
_FERPLUS_CSV = flags.DEFINE_string(
    "ferplus_csv", None, "fer2013new.csv from microsoft/FERPlus (with --labels ferplus).")
_MAX_BAD_FRACTION = flags.DEFINE_float(
    "max_bad_fraction", 0.001,
    "Fail (and commit nothing) when more than this fraction of rows is invalid.",
    lower_bound=0.0, upper_bound=1.0)


class ParseRows(beam.DoFn):
    """(line_number, line) -> FaceRow, or BadRow on the 'bad' output. Skips header and blanks."""

    BAD = "bad"

    def __init__(self, layout: csv_rows.ColumnLayout):
        self._layout = layout
        self._rows = beam.metrics.Metrics.counter("beam_preprocess", "rows_read")
        self._bad = beam.metrics.Metrics.counter("beam_preprocess", "bad_rows")

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


class RelabelWithFerPlus(beam.DoFn):
    """FaceRow -> the same face with its FER+ majority label, or its row index on 'dropped'."""

    DROPPED = "dropped"

    def process(self, row: FaceRow, labels: dict[int, int | None]):
        label = labels.get(row.row_index)
        if label is None:
            beam.metrics.Metrics.counter("beam_preprocess", "ferplus_dropped_rows").inc()
            yield beam.pvalue.TaggedOutput(self.DROPPED, row.row_index)
        else:
            yield FaceRow(row.row_index, row.split, label, row.pixels)


class ReadFerPlusLabels(beam.PTransform):
    """FER+ CSV -> (row_index, label or None) pairs, and BadRows for malformed lines."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pbegin):
        return (pbegin
                | "ReadFerPlusCsv" >> ReadNumberedLines(self._path)
                | "ParseFerPlus" >> beam.FlatMap(_parse_ferplus_line).with_outputs(
                    "bad", main="labels"))


def _parse_ferplus_line(numbered_line):
    line_number, line = numbered_line
    if line_number == 1 or csv_rows.is_blank(line):
        return
    parsed = ferplus.parse_ferplus_row(line, line_number)
    if isinstance(parsed, BadRow):
        # Named as the FER+ file's field, so a dead letter cannot be mistaken for fer2013's line.
        yield beam.pvalue.TaggedOutput("bad", dataclasses.replace(
            parsed, field=f"ferplus_csv {parsed.field}"))
    else:
        yield parsed


def check_inputs(config: JobConfig) -> csv_rows.ColumnLayout:
    """Reads the headers in the driver: a wrong file fails before any output is written."""
    for path in filter(None, [config.input_path, config.ferplus_path]):
        if not FileSystems.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
    layout = csv_rows.parse_header(read_first_line(config.input_path), config.input_path)
    if config.ferplus_path:
        ferplus.check_header(read_first_line(config.ferplus_path), config.ferplus_path)
    return layout


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig,
                   layout: csv_rows.ColumnLayout) -> beam.PCollection:
    """Adds the job's transforms; returns the single-element PCollection of the Manifest."""
    parsed = (pipeline
              | "ReadCsv" >> ReadNumberedLines(config.input_path)
              | "ParseRows" >> beam.ParDo(ParseRows(layout)).with_outputs(
                  ParseRows.BAD, main="faces"))
    faces, bad_rows = parsed.faces, [parsed.bad]

    if config.label_set == "ferplus":
        labels = pipeline | "FerPlusLabels" >> ReadFerPlusLabels(config.ferplus_path)
        bad_rows.append(labels.bad)
        relabelled = faces | "RelabelFerPlus" >> beam.ParDo(
            RelabelWithFerPlus(), labels=beam.pvalue.AsDict(labels.labels)
        ).with_outputs(RelabelWithFerPlus.DROPPED, main="faces")
        faces, dropped = relabelled.faces, relabelled.dropped
    else:
        dropped = pipeline | "NoDroppedRows" >> beam.Create([])

    shard_results = (
        faces
        | "KeyByShard" >> beam.WithKeys(lambda row: shard_key(row, config.num_shards))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(
            config.staging_dir, config.image_size, config.num_shards, len(config.class_names))))
    all_bad_rows = tuple(bad_rows) | "AllBadRows" >> beam.Flatten()

    return (pipeline
            | "Once" >> beam.Create([None])
            | "Commit" >> beam.Map(
                finish_run, config=config,
                shard_results=beam.pvalue.AsList(shard_results),
                bad_rows=beam.pvalue.AsList(all_bad_rows),
                dropped_row_indices=beam.pvalue.AsList(dropped)))


def config_from_flags() -> JobConfig:
    for name in ("input", "output_dir"):
        if not flags.FLAGS[name].value:
            raise flags.ValidationError(f"--{name} is required")
    if (_LABELS.value == "ferplus") != bool(_FERPLUS_CSV.value):
        raise flags.ValidationError("--labels ferplus and --ferplus_csv go together")
    return JobConfig(
        input_path=_INPUT.value,
        output_dir=_OUTPUT_DIR.value.rstrip("/"),
        image_size=_IMAGE_SIZE.value,
        num_train_shards=_NUM_SHARDS.value,
        num_eval_shards=_NUM_EVAL_SHARDS.value,
        label_set=_LABELS.value,
        ferplus_path=_FERPLUS_CSV.value,
        max_bad_fraction=_MAX_BAD_FRACTION.value,
    )


def run(argv: list[str]) -> None:
    """Parses our flags from argv (argv[0] is the program), hands the rest to Beam, runs."""
    flags.FLAGS.unparse_flags()  # a second run in one process must not inherit the first's flags
    beam_args = flags.FLAGS(argv, known_only=True)[1:]
    config = config_from_flags()
    layout = check_inputs(config)
    options = PipelineOptions(beam_args)
    _LOG.info("Preprocessing %s -> %s (run %s)", config.input_path, config.output_dir,
              config.run_id)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, config, layout)
    _LOG.info("Done: %s/manifest.json", config.output_dir)
