"""Training phases on one step axis: the head first, then fine-tuning from the cut."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    trainable_from: str
    first_epoch: int  # epochs of the earlier phases
    first_step: int  # steps of the earlier phases
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_phases(wanted: list[tuple[str, int, float, str]], steps_per_epoch: int) -> list[Phase]:
    """Phases from (name, epochs, learning rate, trainable_from) in order; 0-epoch ones are
    left out."""
    phases, epochs_before = [], 0
    for name, epochs, rate, trainable_from in wanted:
        if epochs > 0:
            phases.append(Phase(name, epochs, rate, trainable_from, epochs_before,
                                epochs_before * steps_per_epoch, steps_per_epoch))
            epochs_before += epochs
    return phases


def steps_per_epoch(train_records: int, global_batch: int, wanted: int | None = None) -> int:
    """--steps_per_epoch, or one pass over the train split at the global batch size."""
    return wanted or max(1, train_records // global_batch)
