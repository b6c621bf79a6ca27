"""Reading and writing weight files in the keras-vggface layout (Keras 2 `save_weights`, HDF5).

Layout: root attribute `layer_names` (every layer in model order, possibly split into
`layer_names0`, `layer_names1`, ...); one group per layer name with attribute `weight_names`;
datasets at `f[layer_name][weight_name]`. Because the original names contain "/", h5py nests
groups (`conv1/7x7_s2/bn` lives inside `conv1/7x7_s2`), so the reader only ever follows
`layer_names` then `weight_names` and never walks groups.

Layers are matched by name (through `trainer.vggface.layout`), never by position: the file's
conv2_1 increase and proj kernels have the same shape, so a positional mix-up would load silently.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import h5py
import numpy as np
from absl import logging

from beam_preprocess.user_error import UserError
from trainer.vggface import layout

# Keras 2 wrote this version; its loader converts weights of files claiming Keras 1.
_KERAS2_VERSION = b"2.2.4"
_WEIGHT_ORDER = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
_MAX_LISTED = 12


class WeightFileError(UserError, ValueError):
    """A weight file is unreadable, not in the keras-vggface layout, or does not fit the model."""


class WeightFileNotFoundError(UserError, FileNotFoundError):
    """No weight file at the path given."""


def _is_remote(path) -> bool:
    return "://" in str(path)


@contextlib.contextmanager
def _local_copy(path):
    """Yields a local path for `path`, copying gs:// (or other tf.io.gfile) files to a temp dir."""
    if not _is_remote(path):
        if not os.path.exists(path):
            raise WeightFileNotFoundError(f"Weight file not found: {path}")
        yield os.fspath(path)
        return
    import tensorflow as tf  # only remote paths need TensorFlow's file systems

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(str(path)))
        try:
            tf.io.gfile.copy(str(path), local)
        except tf.errors.NotFoundError as err:
            raise WeightFileNotFoundError(f"Weight file not found: {path}") from err
        yield local


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes | np.bytes_) else str(value)


def _string_list_attr(attrs, name, where) -> list[str]:
    """A list-of-strings attribute, whole or split into name0, name1, ... (Keras 2 did both)."""
    if name in attrs:
        values = attrs[name]
    elif f"{name}0" in attrs:
        values = []
        chunk = 0
        while f"{name}{chunk}" in attrs:
            values.extend(attrs[f"{name}{chunk}"])
            chunk += 1
    else:
        raise WeightFileError(f"{where} has no {name!r} attribute: not a Keras 2 weight file")
    values = np.atleast_1d(np.asarray(values))
    if values.size == 0:  # Keras 2 stored an empty list as an empty float array
        return []
    if values.dtype.kind not in "SUO":
        raise WeightFileError(f"{where}: attribute {name!r} holds {values.dtype}, not strings")
    return [_decode(v) for v in values]


def _weight_key(weight_name: str) -> str:
    """'conv1/7x7_s2/bn/moving_mean:0' -> 'moving_mean' (also for '..._1/kernel:0' scopes)."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _weights_root(f: h5py.File):
    # A Keras 2 full-model file (`model.save`) keeps the same layout under `model_weights`.
    if "layer_names" not in f.attrs and "model_weights" in f:
        return f["model_weights"]
    return f


def _read_layers(root, path, with_values) -> dict[str, dict[str, np.ndarray | tuple]]:
    layers = {}
    for layer_name in _string_list_attr(root.attrs, "layer_names", path):
        if layer_name not in root:
            raise WeightFileError(f"{path}: layer_names lists {layer_name!r} but there is no "
                                  "such group")
        group = root[layer_name]
        weights = {}
        for weight_name in _string_list_attr(group.attrs, "weight_names", f"{path}:{layer_name}"):
            if weight_name not in group:
                raise WeightFileError(f"{path}: layer {layer_name!r} lists weight "
                                      f"{weight_name!r} but has no such dataset")
            dataset = group[weight_name]
            weights[_weight_key(weight_name)] = dataset[()] if with_values else dataset.shape
        if weights:
            layers[layer_name] = weights
    return layers


def read_keras2_weights(path, with_values=True) -> dict[str, dict[str, np.ndarray]]:
    """Original layer name -> {weight name: array} for every weighted layer of the file, in order.

    With with_values=False the values are the dataset shapes (cheap structure check).
    """
    with _local_copy(path) as local:
        try:
            with h5py.File(local, "r") as f:
                return _read_layers(_weights_root(f), path, with_values)
        except OSError as err:
            raise WeightFileError(f"{path} is not a readable HDF5 weight file (truncated or "
                                  f"another format?): {err}") from err


def _iter_layers(model):
    """Every layer, descending into nested models (a backbone may be wrapped)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _iter_layers(layer)


def vggface_layers(model) -> dict[str, object]:
    """Original name -> layer, for the model's weighted layers that belong to the VGGFace2 net."""
    originals = layout.original_names_by_keras_name()
    return {originals[layer.name]: layer for layer in _iter_layers(model)
            if layer.name in originals and layer.weights}


def _listing(title, items) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def _mismatches(layers, file_weights) -> list[str]:
    problems = []
    for original, layer in layers.items():
        expected = {w.name: tuple(w.shape) for w in layer.weights}
        found = {k: tuple(np.shape(v)) for k, v in file_weights[original].items()}
        if expected != found:
            problems.append(f"{original}: model {expected} vs file {found}")
    return problems


def load_vggface_weights(model, path) -> list[str]:
    """Loads a keras-vggface weight file into the VGGFace2 layers of `model`, by name.

    Every VGGFace2 weighted layer of the model must be in the file with the same weight names
    and shapes, and every weighted layer of the file must be in the model; otherwise nothing is
    loaded and a WeightFileError lists what is missing, extra or mis-shaped. One exception: the
    `classifier` of a file with the top is skipped when the model has no classifier (the backbone
    is the same). Layers that are not VGGFace2 layers (a new head) are left untouched.
    Returns the original names of the layers loaded.
    """
    file_weights = read_keras2_weights(path)
    layers = vggface_layers(model)
    if not layers:
        raise WeightFileError(f"Model {model.name!r} has no VGGFace2 ResNet-50 layers to load "
                              f"{path} into")
    if layout.CLASSIFIER in file_weights and layout.CLASSIFIER not in layers:
        logging.info("Model has no classifier: skipping the classifier of %s", path)
        file_weights.pop(layout.CLASSIFIER)
    missing = [name for name in layers if name not in file_weights]
    extra = [name for name in file_weights if name not in layers]
    shared = {name: layer for name, layer in layers.items() if name in file_weights}
    mis_shaped = _mismatches(shared, file_weights)
    if missing or extra or mis_shaped:
        hint = ""
        if layout.CLASSIFIER in missing:
            hint = "\n  (the file has no top: use include_top=False or the file with the top)"
        raise WeightFileError(
            f"{path} does not fit model {model.name!r}; nothing was loaded."
            + (_listing("missing from the file", missing) if missing else "")
            + (_listing("in the file but not in the model", extra) if extra else "")
            + (_listing("different weight names or shapes", mis_shaped) if mis_shaped else "")
            + hint)
    for original, layer in layers.items():
        for variable in layer.weights:
            variable.assign(file_weights[original][variable.name])
    logging.info("Loaded %d VGGFace2 layers from %s", len(layers), path)
    return list(layers)


def _write_string_list(attrs, name, values) -> None:
    # Fixed-length bytes, as Keras 2 wrote them; an empty list becomes an empty float array.
    attrs[name] = np.array([v.encode("utf8") for v in values]) if values else np.array([])


def _file_order(variables):
    return sorted(variables, key=lambda variable: _WEIGHT_ORDER.index(variable.name))


def _write_layout(f: h5py.File, layers, include_top) -> None:
    names = layout.original_layer_names(include_top)
    _write_string_list(f.attrs, "layer_names", names)
    # np.bytes_ makes fixed-length strings, which read back with .decode() as Keras 2 expects.
    f.attrs["backend"] = np.bytes_(b"tensorflow")
    f.attrs["keras_version"] = np.bytes_(_KERAS2_VERSION)
    for name in names:
        group = f.require_group(name)
        variables = _file_order(layers[name].weights) if name in layers else []
        weight_names = [f"{name}/{w.name}:0" for w in variables]
        _write_string_list(group.attrs, "weight_names", weight_names)
        for weight_name, variable in zip(weight_names, variables, strict=True):
            group.create_dataset(weight_name, data=np.asarray(variable.numpy(), np.float32))


def save_vggface_h5(model, path) -> None:
    """Writes the VGGFace2 weights of `model` as a keras-vggface file (original "/" names).

    The file has the top when the model has the `classifier`. It loads with the original
    keras-vggface under Keras 2 (`model.load_weights`) and with `load_vggface_weights`. Other
    layers (e.g. a fine-tuning head) are not written. `path` may be local or gs://.
    """
    layers = vggface_layers(model)
    include_top = layout.CLASSIFIER in layers
    expected = layout.weight_shapes(include_top)
    missing = [name for name in expected if name not in layers]
    if missing:
        raise WeightFileError(f"Model {model.name!r} is not a VGGFace2 ResNet-50:"
                              + _listing("layers missing", missing))
    if _is_remote(path):
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "weights.h5")
            with h5py.File(local, "w") as f:
                _write_layout(f, layers, include_top)
            tf.io.gfile.copy(local, str(path), overwrite=True)
        return
    with h5py.File(path, "w") as f:
        _write_layout(f, layers, include_top)
