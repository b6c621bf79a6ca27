# Dataflow SDK worker image for `python -m launch preprocess --sdk_container_image=...`:
# Beam's own Python 3.11 SDK image of the Beam version we launch with (the launching SDK and the
# worker's must match), with this package and its pinned dependencies preinstalled, so workers
# start without pip-installing TensorFlow from our sdist (--setup_file).
# The base keeps its entrypoint (/opt/apache/beam/boot), which Dataflow runs.
FROM apache/beam_python3.11_sdk:2.77.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/vggface-emotion/src
COPY . .
# constraints.txt pins apache-beam==2.77.0, the version this image already has, so pip keeps
# the SDK and only adds (or aligns) our dependencies.
RUN pip install -c constraints.txt . \
    && python containers/check_install.py beam_preprocess apache_beam

WORKDIR /
