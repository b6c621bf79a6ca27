"""What an export was trained on: recorded in every export, shown wherever it predicts.

A provenance is a JSON-able dict:
    dataset          the data set's name (the manifest's; "...synthetic..." for drawn faces)
    synthetic        True when that name marks synthetic faces (record_format.SYNTHETIC_MARK)
    label_set        fer2013 or ferplus
    manifest_sha256  sha256 of the records' manifest.json (`sha256sum DATA_DIR/manifest.json`)
    weights          "vggface2", the weight file's name, or "none" (random initialisation)
    image_size       the records' side; network_image_size the side the network runs at
    class_names      the classes, in the model's order
    recipe           the trainer settings that differ from their defaults (where it ran, its
                     paths and its backups left out)
    trained_at       when the export was written (UTC, ISO 8601)
Exports written before provenance was recorded have none ({}): they are described as unknown.
This module imports no TensorFlow.
"""

from __future__ import annotations

import datetime
import hashlib
import posixpath

from beam_preprocess.record_format import Manifest
from trainer.config import FLAG_DEFAULTS, TrainConfig

PROVENANCE_KEY = "provenance"
# Settings that say where and how a run went, not what the model learned.
_NOT_RECIPE = frozenset({
    "data_dir", "job_dir", "run_id", "start_over", "strategy", "tpu", "logical_cpu_devices",
    "collective_timeout_seconds", "backup_every_steps", "backup_every_minutes",
    "data_in_memory_gb", "cache_memory_gb", "steps_per_execution"})


def training_provenance(config: TrainConfig, manifest: Manifest, manifest_bytes: bytes,
                        network_image_size: int) -> dict:
    """The provenance of a model `config` trained on `manifest`
    (whose file held `manifest_bytes`)."""
    return {
        "dataset": manifest.dataset_name,
        "synthetic": manifest.synthetic,
        "label_set": manifest.label_set,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "weights": _weights_name(config.model.weights),
        "image_size": manifest.image_size,
        "network_image_size": network_image_size,
        "class_names": list(manifest.class_names),
        "recipe": recipe_of(config),
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _weights_name(weights: str | None) -> str:
    if not weights or weights == "none":
        return "none"
    return weights if weights == "vggface2" else posixpath.basename(weights)


def recipe_of(config: TrainConfig) -> dict:
    """The settings that differ from their defaults, by flag name (paths and hardware left
    out)."""
    recipe = {}
    for name, value in config.flag_values().items():
        if name not in _NOT_RECIPE and name != "weights" and value != FLAG_DEFAULTS[name]:
            recipe[name] = list(value) if isinstance(value, tuple) else value
    return recipe


def describe(provenance: dict) -> str:
    """One line: what the model was trained on."""
    if not provenance:
        return "trained on: unknown (an export written before provenance was recorded)"
    if "members" in provenance:
        return "ensemble of " + "; ".join(describe(p) for p in provenance["members"])
    weights = ("random weights" if provenance["weights"] == "none"
               else f"{provenance['weights']} weights")
    return (f"trained on {provenance['dataset']} ({provenance['label_set']} labels, manifest "
            f"sha256 {provenance['manifest_sha256'][:12]}), {weights}, "
            f"{provenance['image_size']} px records, {len(provenance['class_names'])} classes, "
            f"{provenance['trained_at']}")


def is_synthetic(provenance: dict) -> bool:
    if "members" in provenance:
        return any(is_synthetic(member) for member in provenance["members"])
    return bool(provenance.get("synthetic"))


def synthetic_warning(provenance: dict) -> str | None:
    """The one line a model trained on synthetic faces shows wherever it predicts."""
    if not is_synthetic(provenance):
        return None
    return ("warning: this model was trained on synthetic drawn faces only: its emotions on "
            "real photos mean little (a real model: fer2013 with configs/recipes/fer2013.cfg, "
            "see the README)")


def ensemble_provenance(members: list[dict]) -> dict:
    return {"members": members}
