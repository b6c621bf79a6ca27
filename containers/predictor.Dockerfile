# Online prediction on Vertex AI endpoints (`python -m launch deploy`): an HTTP server that
# serves an exported SavedModel (JOB_DIR/export/saved_model) with the TensorFlow it was trained
# with. See trainer/inference/prediction_server.py for the routes and the request and response bodies.
#
# Why our own server: the newest prebuilt Vertex AI TensorFlow prediction images are TF 2.15
# (tf2-cpu.2-15 / tf2-gpu.2-15; google-cloud-aiplatform 1.165's list of prebuilt images ends
# there too), and the newest TensorFlow Serving release we could confirm is 2.20. A SavedModel
# written by TensorFlow 2.21 / Keras 3.15 may use ops or attributes that older runtimes reject,
# and an older runtime would not run the exact preprocessing graph the tests checked. This
# image runs TensorFlow 2.21.0 from constraints.txt, on CPU (48x48 faces need no accelerator).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIP_HTTP_PORT=8080

WORKDIR /opt/vggface-emotion/src
COPY . .
RUN pip install -c constraints.txt . \
    && python containers/check_install.py --tensorflow 2.21.0 trainer.inference.prediction_server

WORKDIR /opt/vggface-emotion
EXPOSE 8080
ENTRYPOINT ["python", "-m", "trainer.inference.prediction_server"]
