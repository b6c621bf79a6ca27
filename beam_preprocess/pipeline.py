"""The preprocessing job: fer2013.csv -> validated, sharded TFRecords + manifest.

    python -m beam_preprocess --input fer2013.csv --output_dir out/ [--runner DirectRunner]

Our flags are absl flags (also from --flagfile); every other argument must be a Beam pipeline
option and is passed to Beam untouched, so the same command runs on Dataflow with --runner
DataflowRunner. Anything else stops the job before it starts. The transforms are in
transforms.py; the commit runs here, in the driver, once the pipeline has finished (commit.py).
"""

from __future__ import annotations

import logging

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.runners.runner import PipelineState

from beam_preprocess import arguments, csv_rows, ferplus
from beam_preprocess.commit import finish_run, stage_job_config
from beam_preprocess.gcs_emulator import skip_credential_lookup_when_emulated
from beam_preprocess.job_config import JobConfig
from beam_preprocess.numbered_lines import read_first_line
from beam_preprocess.record_format import DEFAULT_IMAGE_SIZE, dataset_name_of
from beam_preprocess.transforms import (
    CountRows,
    GroupIntoShards,
    JoinFerPlusLabels,
    ParseRows,
    ReadNumberedLines,
    WriteJsonLines,
    WriteShardFiles,
)
from beam_preprocess.user_error import UserError

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
_SHARD_SEED = flags.DEFINE_integer(
    "shard_seed", 0, "Seed of the row hash that picks each row's shard and its place in it.",
    lower_bound=0, upper_bound=2**63 - 1)
_LABELS = flags.DEFINE_enum(
    "labels", "fer2013", ["fer2013", "ferplus"],
    "fer2013: the CSV's 7 emotions. ferplus: FER+ 8-class majority votes (and each face's vote "
    "distribution) from --ferplus_csv.")
_FERPLUS_CSV = flags.DEFINE_string(
    "ferplus_csv", None, "fer2013new.csv from microsoft/FERPlus (with --labels ferplus).")
_DATASET_NAME = flags.DEFINE_string(
    "dataset_name", None, "The data set's name in the manifest, and in every model trained on "
    "it (default: the input file's name without extension). A name containing \"synthetic\" "
    "marks drawn faces: such models say so wherever they predict.")
_MAX_BAD_FRACTION = flags.DEFINE_float(
    "max_bad_fraction", 0.001,
    "Fail (and commit nothing) when more than this fraction of rows is invalid.",
    lower_bound=0.0, upper_bound=1.0)


def parse_flags(argv: list[str]) -> list[str]:
    """Sets our flags from argv (argv[0] is the program); returns the Beam options, checked."""
    if flags.FLAGS.is_parsed():  # a second run in one process must not inherit the first's flags
        flags.FLAGS.unparse_flags()
    beam_args = flags.FLAGS(argv, known_only=True)[1:]
    ours = [flag.name for flag in flags.FLAGS.get_flags_for_module(__name__)]
    arguments.check_beam_arguments(beam_args, [*ours, "flagfile"])
    return beam_args


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
        shard_seed=_SHARD_SEED.value,
        dataset_name=_DATASET_NAME.value or dataset_name_of(_INPUT.value),
    )


class InputNotFoundError(UserError, FileNotFoundError):
    """--input or --ferplus_csv names no file."""


def check_inputs(config: JobConfig) -> csv_rows.ColumnLayout:
    """Reads the headers in the driver: a wrong file fails before any output is written."""
    for path in filter(None, [config.input_path, config.ferplus_path]):
        if not FileSystems.exists(path):
            raise InputNotFoundError(f"{path}: no such file")
    layout = csv_rows.parse_header(read_first_line(config.input_path), config.input_path)
    if config.ferplus_path:
        ferplus.check_header(read_first_line(config.ferplus_path), config.ferplus_path)
    return layout


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig,
                   layout: csv_rows.ColumnLayout) -> None:
    """Adds the job's transforms. Its outputs are files in the run's staging directory."""
    parsed = (pipeline
              | "ReadCsv" >> ReadNumberedLines(config.input_path)
              | "ParseRows" >> beam.ParDo(ParseRows(layout)).with_outputs(
                  ParseRows.BAD, main="faces"))
    faces, bad_rows = parsed.faces, [parsed.bad]
    if config.label_set == "ferplus":
        joined = (parsed.faces, parsed.bad) | "JoinFerPlus" >> JoinFerPlusLabels(
            config.ferplus_path)
        faces, dropped = joined.faces, joined.dropped
        bad_rows.append(joined.bad)
    else:
        dropped = pipeline | "NoDroppedRows" >> beam.Create([])
    all_bad_rows = tuple(bad_rows) | "AllBadRows" >> beam.Flatten()
    counts = (faces, all_bad_rows, dropped) | "CountRows" >> CountRows()

    staging = config.staging
    shard_results = (
        faces
        | "GroupIntoShards" >> GroupIntoShards(config.num_shards, config.shard_seed)
        | "WriteShards" >> beam.ParDo(
            WriteShardFiles(config.staging_dir, config.image_size, config.num_shards,
                            len(config.class_names), config.max_bad_fraction),
            counts=beam.pvalue.AsSingleton(counts)))
    shard_results | "WriteShardResults" >> WriteJsonLines(staging.shard_results)
    counts | "WriteRowCounts" >> WriteJsonLines(staging.row_counts, ".json", single_file=True)
    all_bad_rows | "WriteDeadLetters" >> WriteJsonLines(staging.dead_letter_parts)


def run(argv: list[str]) -> None:
    """Parses argv, runs the pipeline, and commits its output from the driver."""
    skip_credential_lookup_when_emulated()  # before any gs:// access, the header checks too
    options = PipelineOptions(parse_flags(argv))
    config = config_from_flags()
    layout = check_inputs(config)
    _LOG.info("Preprocessing %s -> %s (run %s)", config.input_path, config.output_dir,
              config.run_id)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, layout)
    stage_job_config(config)
    state = pipeline.run().wait_until_finish()
    if options.view_as(GoogleCloudOptions).template_location:
        # Only the job's description was written: no pipeline ran, there is nothing to commit.
        _LOG.warning("Template written; a job run from it leaves its output staged in %s, "
                     "uncommitted: commit it with `python -m beam_preprocess.finish "
                     "--output_dir %s --run_id %s`.", config.staging_dir, config.output_dir,
                     config.run_id)
        return
    if state != PipelineState.DONE:
        raise RuntimeError(f"the pipeline ended in state {state}; nothing was committed")
    finish_run(config)
    _LOG.info("Done: %s/manifest.json", config.output_dir)
