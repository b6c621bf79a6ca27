"""The container images' install steps, run for real, and what they installed, run.

CI has no container runtime and cannot pull base images, so each Dockerfile is emulated
(tests/launch/dockerfiles.py): its COPY gets the .dockerignore'd build context, its ENV and ARG
become the environment, and its RUN commands run unchanged, with `python` and `pip` being a
stand-in for the base image's Python 3.11. The stand-in is a hard-linked clone of this test
run's virtualenv (seconds; a fresh install of the pinned TensorFlow, Beam etc. takes ~100 s per
image), without our package, so pip resolves every Dockerfile's requirements against
constraints.txt but downloads only what the clone lacks. Per image:
  trainer-gpu      the CUDA wheels (3 GB) are empty stand-ins at the pins of
                   containers/cuda-constraints.txt; then `python -m trainer --helpfull`
  trainer-tpu      tensorflow is removed first (the python base image has none), so the steps
                   really install tensorflow-tpu and libtpu (~400 MB); then the trainer's help
  dataflow-worker  then the Beam job on 100 synthetic rows with the DirectRunner
  predictor        then the prediction server, asked about a face over HTTP
The commands run from outside the repository: only the installed copy of our code can be
imported. The fast tests at the top check the Dockerfiles' structure.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from launch.common import images
from tests.conftest import REPO_ROOT
from tests.launch import dockerfiles

CONTAINERS = REPO_ROOT / "containers"
BASES = {
    "trainer-gpu": "python:3.11-slim-bookworm",
    "trainer-tpu": "python:3.11-slim-bookworm",
    "dataflow-worker": "apache/beam_python3.11_sdk:2.77.0",
    "predictor": "python:3.11-slim-bookworm",
}
ENTRYPOINTS = {
    "trainer-gpu": ["python", "-m", "trainer"],
    "trainer-tpu": ["python", "-m", "trainer"],
    "dataflow-worker": None,  # Beam's /opt/apache/beam/boot, which Dataflow runs
    "predictor": ["python", "-m", "trainer.inference.prediction_server"],
}


def instructions(name: str):
    return dockerfiles.dockerfile(CONTAINERS / f"{name}.Dockerfile")


# --- structure (fast) --------------------------------------------------------------------------

def test_every_image_launch_builds_has_a_dockerfile():
    assert sorted(images.DOCKERFILES) == sorted(BASES)
    assert sorted(p.name for p in CONTAINERS.glob("*.Dockerfile")) == sorted(
        Path(path).name for path in images.DOCKERFILES.values())


@pytest.mark.parametrize("name", sorted(BASES))
def test_dockerfile_structure(name):
    steps = instructions(name)
    assert dockerfiles.base_image(steps) == BASES[name]
    assert dockerfiles.entrypoint(steps) == ENTRYPOINTS[name]
    keywords = [step.keyword for step in steps]
    assert keywords.count("COPY") == 1 and "ADD" not in keywords
    commands = dockerfiles.run_commands(steps)
    for command in commands:
        dockerfiles.check_relative(command)
        for pip_install in command.split("&&"):
            if "pip install" in pip_install and "--no-deps" not in pip_install:
                assert "-c constraints.txt" in pip_install, pip_install  # pinned versions
    assert "check_install.py" in commands[-1]  # a broken install fails the build, not a job
    workdirs = [step.args for step in steps if step.keyword == "WORKDIR"]
    assert not workdirs[-1].endswith("/src")  # run from outside the source tree


def test_cuda_pins_cover_tensorflows_cuda_extra_within_its_ranges():
    from importlib import metadata

    from packaging.requirements import Requirement

    cuda = {}
    for line in metadata.requires("tensorflow"):
        requirement = Requirement(line)
        if requirement.marker and requirement.marker.evaluate({"extra": "and-cuda"}) and \
                not requirement.marker.evaluate({"extra": ""}):
            cuda[requirement.name] = requirement.specifier
    pins = dockerfiles.pins(CONTAINERS / "cuda-constraints.txt")
    assert set(pins) == set(cuda)
    for name, version in pins.items():
        assert cuda[name].contains(version), (name, version, str(cuda[name]))


def test_requirements_helper_leaves_out_tensorflow_and_extras():
    result = subprocess.run([sys.executable, str(CONTAINERS / "requirements.py"), "--exclude",
                             "tensorflow"], capture_output=True, text=True, check=True)
    names = [line.split("<")[0].split(">")[0].split("=")[0].split(";")[0].strip()
             for line in result.stdout.splitlines()]
    assert "keras" in names and "google-cloud-storage" in names
    assert "tensorflow" not in names  # excluded
    assert not any(name.startswith("apache-beam") for name in names)  # the preprocess extra
    assert not any("extra" in line for line in result.stdout.splitlines())


# --- the install steps, run (slow) -------------------------------------------------------------

def require_virtualenv():
    if sys.prefix == sys.base_prefix:
        pytest.skip("the stand-in base image is a clone of the test run's virtualenv")


def emulate(name: str, tmp_path: Path, prepare=None) -> dockerfiles.Emulation:
    require_virtualenv()
    environment = dockerfiles.clone_environment(Path(sys.prefix), tmp_path / "python")
    dockerfiles.pip(environment, "uninstall", "--yes", "vggface-emotion")  # not in the base
    if prepare:
        prepare(environment)
    emulation = dockerfiles.Emulation(CONTAINERS / f"{name}.Dockerfile", REPO_ROOT,
                                      tmp_path / "root", environment)
    emulation.run()
    assert_installed_from_the_image(emulation)
    return emulation


def assert_installed_from_the_image(emulation: dockerfiles.Emulation) -> None:
    """Our package is a regular (not editable) install in the stand-in's site-packages."""
    check = emulation.python("-c", (
        "import importlib.metadata as m, json, trainer, beam_preprocess, launch; "
        "print(json.dumps([m.distribution('vggface-emotion').read_text('direct_url.json'), "
        "trainer.__file__, beam_preprocess.__file__, launch.__file__]))"))
    assert check.returncode == 0, check.stderr[-3000:]
    direct_url, *files = json.loads(check.stdout.splitlines()[-1])
    assert '"editable": true' not in (direct_url or "")
    site = str(dockerfiles.site_packages(emulation.environment))
    for file in files:
        assert file.startswith(site + "/"), file


@pytest.fixture()
def project_venv_untouched():
    """The clones share files with this run's virtualenv: it must come out unchanged."""
    site = dockerfiles.site_packages(Path(sys.prefix))
    before = sorted(p.name for p in site.glob("*.dist-info"))
    yield
    assert sorted(p.name for p in site.glob("*.dist-info")) == before
    direct_url = next(site.glob("vggface_emotion-*.dist-info"), None)
    if direct_url is not None and (direct_url / "direct_url.json").exists():
        assert json.loads((direct_url / "direct_url.json").read_text())["url"] == (
            REPO_ROOT.as_uri())


def assert_trainer_runs(emulation: dockerfiles.Emulation, **env: str) -> None:
    # absl prints the help and exits with status 1; the text shows the entry module ran.
    result = emulation.python("-m", "trainer", "--helpfull", timeout=300, env=env)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for flag in ("--data_dir", "--job_dir", "--mixed_precision", "--collective_timeout_seconds"):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_trainer_gpu_image_installs_and_runs_the_trainer(tmp_path, project_venv_untouched):
    def cuda_stand_ins(environment):
        wheels = tmp_path / "stand-ins"
        wheels.mkdir()
        paths = [str(dockerfiles.stand_in_wheel(wheels, name, version)) for name, version
                 in dockerfiles.pins(CONTAINERS / "cuda-constraints.txt").items()]
        dockerfiles.pip(environment, "install", "--no-deps", "--no-index", *paths)

    emulation = emulate("trainer-gpu", tmp_path, cuda_stand_ins)
    assert_trainer_runs(emulation)


@pytest.mark.slow
def test_trainer_tpu_image_installs_tensorflow_for_tpu(tmp_path, project_venv_untouched):
    emulation = emulate("trainer-tpu", tmp_path,
                        lambda environment: dockerfiles.pip(environment, "uninstall", "--yes",
                                                            "tensorflow"))
    off_tpu = {"TPU_SKIP_MDS_QUERY": "1"}  # no GCE metadata server here (see the Dockerfile)
    versions = emulation.python("-c", (
        "import importlib.metadata as m, libtpu, os, tensorflow as tf; "
        "print(tf.__version__, m.version('tensorflow-tpu'), m.version('libtpu'), "
        "os.path.exists(libtpu.get_library_path()), "
        "any(d.device_type == 'TPU_SYSTEM' for d in tf.config.list_logical_devices()))"),
        timeout=300, env=off_tpu)
    assert versions.returncode == 0, versions.stderr[-3000:]
    # TensorFlow loaded libtpu (its TPU_SYSTEM device exists even without a TPU chip).
    assert versions.stdout.split()[-5:] == ["2.20.0", "2.20.0", "0.0.20", "True", "True"]
    # Nothing pulled the CPU/GPU `tensorflow` wheel back over the TPU build.
    assert "PackageNotFoundError" in emulation.python(
        "-c", "import importlib.metadata as m; m.version('tensorflow')").stderr
    assert_trainer_runs(emulation, **off_tpu)  # our trainer imports and parses flags on TF 2.20


@pytest.mark.slow
def test_dataflow_worker_image_runs_the_beam_job(tmp_path, project_venv_untouched):
    emulation = emulate("dataflow-worker", tmp_path)
    made = emulation.python("-m", "beam_preprocess.synthetic", "--rows", "100", "--output",
                            "fer2013.csv", timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    job = emulation.python("-m", "beam_preprocess", "--input", "fer2013.csv", "--output_dir",
                           "records", "--runner", "DirectRunner", "--image_size", "48",
                           "--num_shards", "2", "--num_eval_shards", "1", timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    records = emulation.workdir / "records"
    manifest = json.loads((records / "manifest.json").read_text())
    assert manifest  # what the trainer reads first
    shards = sorted(p.name for p in records.glob("*.tfrecord"))
    assert shards == ["test-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
                      "train-00001-of-00002.tfrecord", "validation-00000-of-00001.tfrecord"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_predictor_image_serves_an_export(tmp_path, project_venv_untouched):
    from tests.launch.test_serving import CLASS_NAMES, write_tiny_export

    emulation = emulate("predictor", tmp_path)
    export = write_tiny_export(tmp_path / "export" / "saved_model")
    port = free_port()
    server = subprocess.Popen(
        [str(emulation.shims / "python"), "-m", "trainer.inference.prediction_server"],
        cwd=emulation.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**emulation.process_env(), "AIP_STORAGE_URI": export, "AIP_HTTP_PORT": str(port),
             "AIP_HEALTH_ROUTE": "/v1/health", "AIP_PREDICT_ROUTE": "/v1/predict"})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health",
                                            timeout=5) as response:
                    assert json.loads(response.read())["classes"] == CLASS_NAMES
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=json.dumps({"instances": [[[255] * 48] * 48]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            [prediction] = json.loads(response.read())["predictions"]
        assert prediction["emotion"] == "sad" and prediction["class_index"] == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
