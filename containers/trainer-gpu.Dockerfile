# The trainer for Vertex AI custom jobs on GPU machines (and CPU-only ones): `python -m trainer`.
#   python -m launch image --project P --region R     # builds and pushes it with Cloud Build
#   docker build -f containers/trainer-gpu.Dockerfile -t trainer-gpu .   # locally (repo root)
#
# Base image: python:3.11-slim-bookworm plus TensorFlow 2.21.0 with its pip CUDA libraries
# (`tensorflow[and-cuda]`), not tensorflow/tensorflow:2.21.0-gpu. Why:
#  - TensorFlow's own GPU Dockerfile for its recent images installs Python from deadsnakes onto
#    nvidia/cuda:12.3.0-base-ubuntu22.04 (ARG PYTHON_VERSION=python3.11), then the TensorFlow
#    wheel. Whether a 2.21.0-gpu tag exists, and with which Python, could not be checked from
#    where this was written (no Docker Hub access); on it pip would reinstall our pinned
#    TensorFlow and its dependencies anyway, and its system Python is not ours to pin.
#  - Since TF 2.15 the pip wheel finds CUDA, cuDNN and NCCL in the nvidia-* wheels of its
#    [and-cuda] extra; the host only needs the NVIDIA driver, which Vertex AI GPU machines
#    provide. So any Python 3.11 base works, and every library version is pinned here:
#    constraints.txt for TensorFlow and our dependencies (the combination the tests run),
#    containers/cuda-constraints.txt for the CUDA wheels.
# The same image runs CPU-only jobs (TensorFlow falls back to the CPU when there is no GPU).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/vggface-emotion/src
COPY . .
# One resolution of everything: TensorFlow with its CUDA libraries, then this package
# (non-editable) with the exact versions of constraints.txt.
RUN pip install -c constraints.txt -c containers/cuda-constraints.txt "tensorflow[and-cuda]" . \
    && python containers/check_install.py --tensorflow 2.21.0 trainer beam_preprocess

# Run from outside the source tree, so that `python -m trainer` imports the installed package.
WORKDIR /opt/vggface-emotion
ENTRYPOINT ["python", "-m", "trainer"]
