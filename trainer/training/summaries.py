"""TensorBoard scalars written with TensorFlow alone.

tf.summary.scalar needs the `tensorboard` package at run time, which TensorFlow 2.21 does not
install; the event files it writes are only `tf.summary.write` calls with scalar metadata, so
we write those directly and the trainer does not depend on TensorBoard (the viewer reads them).
"""

from __future__ import annotations

import posixpath

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# What tensorboard.plugins.scalar.metadata attaches: the plugin that draws the series.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def scalar(name: str, value: float, step: int) -> None:
    """Writes one scalar to the default summary writer (tf.summary.scalar's format)."""
    tf.summary.write(tag=name, tensor=tf.constant(value, tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from the event files under `log_dir` (for tests and tools)."""
    from tensorflow.core.util import event_pb2

    series: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(tf.io.gfile.glob(f"{log_dir.rstrip('/')}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
                    else value.simple_value
                series.setdefault(value.tag, []).append((event.step, number))
    return series


class SummaryWriters:
    """TensorBoard writers of the train and validation series (no-ops off the chief)."""

    def __init__(self, log_dir: str, is_chief: bool):
        names = ("train", "validation")
        if is_chief:
            self._writers = {n: tf.summary.create_file_writer(posixpath.join(log_dir, n))
                             for n in names}
        else:
            self._writers = {n: tf.summary.create_noop_writer() for n in names}

    def write(self, step: int, train: dict[str, float], validation: dict[str, float]) -> None:
        for name, values in (("train", train), ("validation", validation)):
            with self._writers[name].as_default():
                for key, value in values.items():
                    scalar(key.removeprefix("val_"), value, step)
            self._writers[name].flush()
