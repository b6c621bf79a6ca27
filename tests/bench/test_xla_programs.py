"""bench/xla_programs.py: the XLA programs the trainer runs, exported from TensorFlow, compute
under jax's XLA, with TensorFlow and the project out of reach, what TensorFlow computes with
the same inputs and variables (float32, 1e-5); the export command builds them from the
trainer's own flags."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bench.xla_export import evaluation_programs, training_programs, value_of, write_programs
from tests.conftest import REPO_ROOT
from tests.support.tiny_step import BATCH, CLASSES, STEPS, tiny_model, tiny_step

SCRIPT = REPO_ROOT / "bench" / "xla_programs.py"
# `run` as on a GPU machine that has jax but neither TensorFlow nor this project.
WITHOUT_TENSORFLOW = (
    "import runpy, sys\n"
    "for name in ('tensorflow', 'keras', 'trainer', 'beam_preprocess', 'bench'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def run_without_tensorflow(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(SCRIPT), "run",
                           *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300)


def tensorflow_results(program, entry: dict, xla_dir) -> list[np.ndarray]:
    """The program's results as TensorFlow computes them from the variables' stored values:
    what it returns, and the new value of each variable it updates in place, in the
    program's result order."""
    args = program.call_args()
    handles = program.function.get_concrete_function(*args).captured_inputs
    stored = np.load(xla_dir / entry["values_file"])
    for index, handle in enumerate(handles, start=len(args)):
        if handle.dtype == tf.resource:  # programs before this one may have changed it
            tf.raw_ops.AssignVariableOp(resource=handle, value=stored[f"p{index}"])
    returned = iter(value_of(t) for t in tf.nest.flatten(program.function(*args)))
    updated = {p["updated_by_result"]: index - len(args)
               for index, p in enumerate(entry["parameters"]) if "updated_by_result" in p}
    return [value_of(handles[updated[r]]) if r in updated else next(returned)
            for r in range(len(entry["results"]))]


def test_exported_programs_run_without_tensorflow_and_compute_what_it_computes(tmp_path):
    model = tiny_model()
    spec, optimizer = tiny_step(model)
    programs = [*training_programs(spec, optimizer, CLASSES, BATCH, steps_per_call=STEPS),
                *evaluation_programs(model, CLASSES, BATCH)]
    catalogue = write_programs(programs, str(tmp_path / "xla"), "tiny", save_values=True)
    expected = {p.name: tensorflow_results(p, catalogue["programs"][p.name], tmp_path / "xla")
                for p in programs}

    result = run_without_tensorflow(tmp_path / "xla", "--values", "--calls", 2,
                                    "--save_outputs", tmp_path / "outputs")
    assert result.returncode == 0, result.stderr[-3000:]
    for name, results in expected.items():
        faces = BATCH * STEPS if name == "train_step" else BATCH  # train_step: STEPS steps
        assert f"| {name} | {faces} |" in result.stdout  # a row of timings per program
        outputs = np.load(tmp_path / "outputs" / f"{name}.npz")
        assert len(outputs) == len(results) > 0
        for i, want in enumerate(results):
            np.testing.assert_allclose(outputs[f"r{i}"], want, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} result {i}")
    # The train step returns every variable it updates: model, optimizer, metrics.
    train_step = catalogue["programs"]["train_step"]
    assert len(train_step["results"]) == sum(
        "updated_by_result" in p for p in train_step["parameters"]) > len(model.weights)


@pytest.mark.parametrize("flags,error", [
    (["--flagfile=configs/recipes/demo_pretrained.cfg"], "--cache_features trains on cached"),
    (["--programs=serve,nonesuch"], "--programs: the programs are train_step,"),
])
def test_export_refuses_what_it_cannot_build_in_one_line(tmp_path, flags, error):
    result = subprocess.run([sys.executable, str(SCRIPT), "export",
                             f"--xla_dir={tmp_path}", *flags],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 2
    assert error in result.stderr


def test_export_builds_from_a_flagfile_what_run_compiles(tmp_path):
    """The recipe's flagfile, the network at 32 px, the serving program (ResNet-50's train step
    compiles too slowly for a test here; the test above covers the steps' kind)."""
    export = subprocess.run(
        [sys.executable, str(SCRIPT), "export", f"--xla_dir={tmp_path}",
         "--flagfile=configs/recipes/fer2013.cfg", "--image_size=32", "--batch_size=2",
         "--programs=serve"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    catalogue = json.loads((tmp_path / "programs.json").read_text())
    assert list(catalogue["programs"]) == ["serve"]
    assert '"tta": "ten_crop"' in catalogue["description"]  # the recipe it was built from
    faces = catalogue["programs"]["serve"]["parameters"][0]
    assert (faces["role"], faces["shape"], faces["dtype"]) == ("faces", [2, 48, 48], "uint8")

    result = run_without_tensorflow(tmp_path, "--calls", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| serve | 2 |" in result.stdout
