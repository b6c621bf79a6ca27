"""Test helpers: the reference layer list of the original model, and weight files written in the
exact layout Keras 2 `save_weights` produced, independently of trainer.vggface.weight_files."""

import json
from pathlib import Path

import h5py
import numpy as np

REFERENCE_JSON = Path(__file__).parent / "data" / "vggface2_resnet50_layers.json"
TOP_LAYERS = [
    {"name": "flatten_1", "class": "Flatten", "inbound": ["avg_pool"]},
    {"name": "classifier", "class": "Dense", "inbound": ["flatten_1"],
     "weights": [["kernel:0", [2048, 8631]], ["bias:0", [8631]]]},
]


def reference_layers(include_top=False) -> list[dict]:
    layers = json.loads(REFERENCE_JSON.read_text())["layers"]
    return layers + TOP_LAYERS if include_top else layers


def random_weights(include_top=False, seed=0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Original layer name -> [(file weight name, float32 array)].

    Scaled so activations stay O(1) through the 16 blocks (a fair numerical comparison).
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in reference_layers(include_top):
        arrays = []
        for suffix, shape in layer.get("weights", []):
            if suffix == "kernel:0":
                value = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
            elif suffix in ("gamma:0", "moving_variance:0"):
                value = rng.uniform(0.5, 1.5, shape)
            else:  # beta, moving_mean, bias
                value = rng.normal(0.0, 0.1, shape)
            arrays.append((f"{layer['name']}/{suffix}", value.astype(np.float32)))
        weights[layer["name"]] = arrays
    return weights


def _strings(values, style):
    if style == "str":  # variable-length str, as h5py 3 writes Python strings
        return np.array(values, dtype=h5py.string_dtype())
    return np.array([v.encode("utf8") for v in values])  # fixed-length bytes ("S<n>")


def write_keras2_file(path, weights, style="bytes", split_layer_names=0, extra_group=False,
                      layer_names=None) -> None:
    """Writes `weights` (from random_weights) like Keras 2 `save_weights` did.

    style: "bytes" or "str" attributes. split_layer_names: if > 0, store `layer_names` as that
    many chunks layer_names0..N (Keras 2 did this for attributes over 64 kB). extra_group: add a
    `top_level_model_weights` group, as newer writers do. layer_names: override the root list.
    """
    names = list(weights) if layer_names is None else layer_names
    with h5py.File(path, "w") as f:
        if split_layer_names:
            for i, chunk in enumerate(np.array_split(np.array(names), split_layer_names)):
                f.attrs[f"layer_names{i}"] = _strings(list(chunk), style)
        else:
            f.attrs["layer_names"] = _strings(names, style)
        f.attrs["backend"] = "tensorflow" if style == "str" else np.bytes_(b"tensorflow")
        f.attrs["keras_version"] = "2.2.4" if style == "str" else np.bytes_(b"2.2.4")
        for name in names:
            group = f.require_group(name)  # "a/b" nests inside "a": the Keras 2 trap
            arrays = weights.get(name, [])
            if arrays:
                group.attrs["weight_names"] = _strings([w for w, _ in arrays], style)
            else:
                group.attrs["weight_names"] = np.array([])  # what Keras 2 wrote: float64, empty
            for weight_name, value in arrays:
                group.create_dataset(weight_name, data=value)
        if extra_group:
            f.create_group("top_level_model_weights").attrs["weight_names"] = np.array([])
