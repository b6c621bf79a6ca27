"""The README's main command, `bash scripts/demo.sh`, end to end: synthetic CSV -> Beam
preprocessing -> training -> evaluation -> export.

Without the VGGFace2 weights (as here) it trains from random weights and must learn the
synthetic expressions; with them (a weight file this test writes, random but in the published
layout) it runs the pretrained recipe at 224 px on cached features.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support.trainer_data import REPO_ROOT, trainer_env

MAJORITY_CLASS_SHARE = 0.25  # happy, in fer2013's proportions


def run_demo(out, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/demo.sh", str(out)], cwd=REPO_ROOT,
                          env=trainer_env(**env), capture_output=True, text=True, timeout=2400)


def check_outputs(result, out, faces: int) -> dict:
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "job/eval/metrics.json").read_text())
    printed = re.search(r"test accuracy:\s+([\d.]+) on (\d+) synthetic test faces",
                        result.stdout)
    assert printed, result.stdout[-2000:]
    assert float(printed[1]) == pytest.approx(metrics["accuracy"], abs=5e-4)
    assert int(printed[2]) == metrics["records"] == faces
    for path in ("records/manifest.json", "records/class_distribution.png",
                 "job/checkpoints/best.weights.h5", "job/eval/confusion_matrix.png",
                 "job/model/saved_model.pb", "job/export/model.keras"):
        assert (out / path).is_file(), path
        assert str(out / path.split("/")[0]) in result.stdout
    assert "This model has seen only synthetic cartoon faces" in result.stdout
    assert "configs/recipes/fer2013.cfg" in result.stdout  # how to get a real model
    return metrics


@pytest.mark.slow
def test_demo_runs_end_to_end_and_learns_the_synthetic_expressions(tmp_path):
    """The README's demo exactly as it runs offline."""
    out = tmp_path / "demo"
    result = run_demo(out, KERAS_HOME=str(tmp_path / "empty_keras_home"))
    assert "VGGFace2 weights not found" in result.stdout
    assert re.search(r"epoch 1/4 \(fine_tune\).* - about \d+m \d\ds left", result.stderr), (
        result.stderr[-2000:])  # progress with the time the run still needs
    metrics = check_outputs(result, out, faces=300)
    assert json.loads((out / "records/manifest.json").read_text())["image_size"] == 48
    assert metrics["accuracy"] > 2 * MAJORITY_CLASS_SHARE


@pytest.mark.slow
def test_demo_with_weights_runs_the_pretrained_recipe_at_224px(tmp_path):
    from trainer.vggface.network import resnet50, save_vggface_h5

    weights = tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5"
    save_vggface_h5(resnet50(include_top=False, weights=None), str(weights))
    out = tmp_path / "demo"
    result = run_demo(out, DEMO_WEIGHTS=str(weights), DEMO_ROWS="200", DEMO_EPOCHS="1",
                      KERAS_HOME=str(tmp_path / "keras_home"))
    assert "pretrained VGGFace2 weights" in result.stdout, result.stdout[-2000:]
    check_outputs(result, out, faces=20)
    assert json.loads((out / "records/manifest.json").read_text())["image_size"] == 224
    assert f"Loaded 106 VGGFace2 layers from {weights}" in result.stderr
    assert "feature cache:" in result.stderr


def test_demo_weights_that_cannot_be_used_stop_it_with_the_reason(tmp_path):
    result = run_demo(tmp_path / "demo", DEMO_WEIGHTS="/nonexistent/weights.h5")
    assert result.returncode == 2
    assert "demo: /nonexistent/weights.h5 is not usable: [Errno 2] No such file" in result.stderr
    assert not (tmp_path / "demo" / "fer2013_synthetic.csv").exists()
