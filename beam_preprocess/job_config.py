"""The settings of one preprocessing run, fixed in the driver and shipped to the workers."""

from __future__ import annotations

import dataclasses
import json
import posixpath
import uuid

from beam_preprocess.record_format import BAD_ROWS_FILENAME, CLASS_NAMES_BY_LABEL_SET, SPLITS

STAGING_FOLDER = ".staging"
JOB_CONFIG_FILENAME = "job_config.json"


@dataclasses.dataclass(frozen=True)
class StagingFiles:
    """What the pipeline leaves in `<output_dir>/.staging/<run_id>/` for the driver's commit."""

    directory: str

    def path(self, name: str) -> str:
        return posixpath.join(self.directory, name)

    @property
    def row_counts(self) -> str:
        """One JSON RowCounts (WriteToText's prefix; the suffix is .json, no shard template)."""
        return self.path("row_counts")

    @property
    def shard_results(self) -> str:
        """Prefix of the JSON-lines files of ShardResults (suffix .jsonl)."""
        return self.path("shard_results")

    @property
    def dead_letter_parts(self) -> str:
        """Prefix of the JSON-lines files of bad rows, unordered, as the workers wrote them."""
        return self.path("dead_letters")

    @property
    def job_config(self) -> str:
        """The run's JobConfig (JSON), written by the driver before the pipeline runs, so that
        `python -m beam_preprocess.finish` can commit a run whose driver died."""
        return self.path(JOB_CONFIG_FILENAME)

    @property
    def dead_letters(self) -> str:
        """The merged, ordered dead letters; on a failed run this is what is kept."""
        return self.path(BAD_ROWS_FILENAME)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    input_path: str
    output_dir: str
    image_size: int
    num_train_shards: int
    num_eval_shards: int
    label_set: str  # "fer2013" or "ferplus"
    ferplus_path: str | None
    max_bad_fraction: float
    shard_seed: int = 0
    dataset_name: str = ""
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES_BY_LABEL_SET[self.label_set]

    @property
    def label_distribution(self) -> bool:
        """Whether records carry each class's share of the votes (FER+ has votes; fer2013 not)."""
        return self.label_set == "ferplus"

    @property
    def num_shards(self) -> dict[str, int]:
        return {s: self.num_train_shards if s == "train" else self.num_eval_shards for s in SPLITS}

    @property
    def staging_dir(self) -> str:
        """Where this run's files wait until the driver's commit moves them into output_dir."""
        return posixpath.join(self.output_dir, STAGING_FOLDER, self.run_id)

    @property
    def staging(self) -> StagingFiles:
        return StagingFiles(self.staging_dir)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> JobConfig:
        return cls(**json.loads(text))
