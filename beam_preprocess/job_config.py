"""The settings of one preprocessing run, fixed in the driver and shipped to the workers."""

from __future__ import annotations

import dataclasses
import posixpath
import uuid

from beam_preprocess.record_format import CLASS_NAMES_BY_LABEL_SET, SPLITS


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
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES_BY_LABEL_SET[self.label_set]

    @property
    def num_shards(self) -> dict[str, int]:
        return {s: self.num_train_shards if s == "train" else self.num_eval_shards for s in SPLITS}

    @property
    def staging_dir(self) -> str:
        """Where this run's files wait until the commit step moves them into output_dir."""
        return posixpath.join(self.output_dir, ".staging", self.run_id)
