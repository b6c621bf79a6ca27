# The trainer for Vertex AI custom jobs on Cloud TPU VMs (machine type cloud-tpu, TPU v2/v3;
# ct5lp-hightpu-* for v5e): `python -m trainer --strategy=tpu`.
#
# A TPU needs a TensorFlow build with TPU support plus libtpu. The `tensorflow` wheel on PyPI has
# none (its libraries contain no libtpu loader); TPU builds are a separate distribution,
# `tensorflow-tpu`, whose setup.py adds `libtpu~=0.0.14` (the same line is in TF 2.21's own
# tensorflow/tools/pip_package/setup.py for TPU builds).
#
# NOT TensorFlow 2.21: the newest `tensorflow-tpu` on PyPI is 2.20.0 (published 2025-08-13; 2.21
# has no TPU wheel there, checked with `pip index versions tensorflow-tpu`). Google may host a
# 2.21 TPU wheel at https://storage.googleapis.com/libtpu-tf-releases/index.html; this could not
# be checked from here. So this image runs TensorFlow 2.20 (one minor version behind the pinned
# 2.21 of constraints.txt; Keras, NumPy and our other dependencies stay at their pins) and is
# untested on a TPU. When a 2.21 TPU wheel exists, build with
#   --build-arg TENSORFLOW_TPU_VERSION=2.21.0 [--build-arg TPU_WHEEL_INDEX=<find-links URL>]
# libtpu: tensorflow-tpu 2.20.0 accepts any libtpu >=0.0.14,<0.1. TensorFlow documents no exact
# pair for 2.19+ (the Cloud TPU table stops at TF 2.18.0 / libtpu 1.12.0), so this pins 0.0.20,
# the last libtpu release before tensorflow-tpu 2.20.0 was published (libtpu 0.0.20: 2025-08-01;
# tensorflow-tpu 2.20.0: 2025-08-13; the next libtpu, 0.0.21, came on 2025-08-15).
FROM python:3.11-slim-bookworm

ARG TENSORFLOW_TPU_VERSION=2.20.0
ARG LIBTPU_VERSION=0.0.20
# Extra pip --find-links for TPU wheels that are not on PyPI (empty: PyPI only).
ARG TPU_WHEEL_INDEX=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/vggface-emotion/src
COPY . .
# TensorFlow for TPU and libtpu (TensorFlow finds libtpu/libtpu.so in site-packages).
RUN pip install -c constraints.txt ${TPU_WHEEL_INDEX:+--find-links "$TPU_WHEEL_INDEX"} \
        "tensorflow-tpu==${TENSORFLOW_TPU_VERSION}" "libtpu==${LIBTPU_VERSION}"
# This package without its `tensorflow` requirement (see containers/requirements.py), then the
# rest of its requirements at the versions of constraints.txt.
# TPU_SKIP_MDS_QUERY=1 (for the check only, not in the image's environment): away from a TPU
# VM, libtpu would wait minutes for the GCE metadata server while TensorFlow imports. On Vertex
# AI TPU VMs it must ask the metadata server for the TPU's type and topology, so the image does
# not set it. (`docker run` of this image elsewhere needs -e TPU_SKIP_MDS_QUERY=1.)
RUN pip install --no-deps . \
    && python containers/requirements.py --exclude tensorflow > requirements-tpu.txt \
    && pip install -c constraints.txt -r requirements-tpu.txt \
    && TPU_SKIP_MDS_QUERY=1 python containers/check_install.py \
        --tensorflow "${TENSORFLOW_TPU_VERSION}" trainer beam_preprocess libtpu

WORKDIR /opt/vggface-emotion
ENTRYPOINT ["python", "-m", "trainer"]
