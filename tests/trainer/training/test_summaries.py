"""TensorBoard scalars without the tensorboard package."""

import tensorflow as tf

from trainer.training import summaries


def test_summaries_are_readable_as_tensorboard_scalars(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        summaries.scalar("accuracy", 0.25, step=3)
        summaries.scalar("accuracy", 0.5, step=6)
    writer.flush()
    assert summaries.read_scalars(str(tmp_path)) == {"accuracy": [(3, 0.25), (6, 0.5)]}


def test_summary_writers_write_train_and_validation_series(tmp_path):
    writers = summaries.SummaryWriters(str(tmp_path), is_chief=True)
    writers.write(4, {"loss": 1.5}, {"val_loss": 2.0, "val_accuracy": 0.5})
    assert summaries.read_scalars(str(tmp_path / "train")) == {"loss": [(4, 1.5)]}
    assert summaries.read_scalars(str(tmp_path / "validation")) == {
        "loss": [(4, 2.0)], "accuracy": [(4, 0.5)]}
    summaries.SummaryWriters(str(tmp_path / "worker"), is_chief=False).write(1, {"a": 1}, {})
    assert not (tmp_path / "worker").exists()
