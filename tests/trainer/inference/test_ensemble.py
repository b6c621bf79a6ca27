"""Several exports averaged: the way published results above 75 % on fer2013 are made."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from trainer.export.loader import ModelLoadError, load_ensemble, load_exported


@pytest.mark.slow
def test_an_ensemble_answers_the_mean_of_its_members(export_dir, test_faces):
    faces, _ = test_faces
    paths = [str(export_dir.saved_model), str(export_dir.keras)]
    members = [load_exported(path).probabilities(faces) for path in paths]
    ensemble = load_ensemble(paths)
    np.testing.assert_allclose(ensemble.probabilities(faces), np.mean(members, axis=0),
                               atol=1e-6)
    # On records too: the ensemble's logits are those whose softmax is the members' mean.
    import tensorflow as tf

    records = np.full((2, ensemble.image_size, ensemble.image_size, 1), 120, np.uint8)
    mean = np.mean([tf.nn.softmax(load_exported(p).logits_of_records(records)).numpy()
                    for p in paths], axis=0)
    np.testing.assert_allclose(tf.nn.softmax(ensemble.logits_of_records(records)), mean,
                               atol=1e-6)
    assert load_ensemble(paths[:1]).path == paths[0]


@pytest.mark.slow
def test_members_with_other_classes_are_refused(export_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(export_dir.path, other)
    labels = json.loads((other / "labels.json").read_text())
    labels["class_names"] = labels["class_names"][::-1]
    (other / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ModelLoadError, match="cannot be averaged"):
        load_ensemble([str(export_dir.keras), str(other / "model.keras")])
