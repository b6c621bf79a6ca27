"""Packaging for vggface-emotion.

The container images (containers/) and Dataflow's `--setup_file` install this distribution, so
the ranges below are the versions the code is known to work with, not wishes. The base install
is what every part needs; extras add the Beam driver (preprocess), TFLite/ONNX exports (mobile),
the web demo (web), the cloud launchers (cloud), the CUDA libraries for NVIDIA GPUs (gpu) and
the tests and the XLA programs' jax runner (dev).
"""

import setuptools

setuptools.setup(
    name="vggface-emotion",
    version="0.1.0",
    description=(
        "Fine-tune the VGGFace2 ResNet-50 to read facial emotion (fer2013 / FER+): "
        "Beam preprocessing, tf.distribute training, Dataflow and Vertex AI launchers."
    ),
    python_requires=">=3.11,<3.14",
    packages=setuptools.find_packages(include=["beam_preprocess*", "trainer*", "launch*"]),
    # Only the files named below: with include_package_data, setuptools takes the web demo's
    # static/ folder for a package missing from `packages` and prints a banner at every install.
    # What every part needs, the Beam workers included (their container already has Beam).
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "google-cloud-storage>=3,<4",
        "absl-py>=2.1,<3",
        "numpy>=2,<3",
        "h5py>=3.10,<4",
        "opencv-python-headless>=4.14,<5",  # 5.x removed the Haar face detector
        "matplotlib>=3.8,<4",  # the class chart and the confusion-matrix picture
        "mtcnn>=1.0,<2",  # the default face detector; its weights ship in the wheel
        "pillow>=12,<13",  # photo headers: sizes checked before any pixel is decoded
    ],
    extras_require={
        # The Beam job's driver (a Dataflow worker image has Beam already).
        "preprocess": ["apache-beam[gcp]>=2.77,<3"],
        # NVIDIA GPUs: TensorFlow with its CUDA, cuDNN and NCCL wheels (pinned for TF 2.21 in
        # containers/cuda-constraints.txt; the host needs only the NVIDIA driver).
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "mobile": ["ai-edge-litert>=2.3,<3", "tf2onnx>=1.17,<2", "onnx>=1.23,<2",
                   "onnxruntime>=1.32,<2"],
        "web": ["flask>=3.1,<4", "waitress>=3.0,<4"],
        "cloud": ["google-cloud-aiplatform>=1.100,<2", "google-cloud-build>=3.35,<4",
                  "build>=1.2,<2", "apache-beam[gcp]>=2.77,<3"],
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "ruff>=0.15,<1",
                "gcp-storage-emulator>=2024.1", "build>=1.2,<2", "selenium>=4.51,<5",
                "requests>=2.32,<3",
                # bench/xla_programs.py runs the trainer's XLA programs with jax's XLA (tests:
                # its CPU backend; 0.10 here, 0.11 on the GPU machine it was written for).
                "jax>=0.10,<0.12"],
    },
    package_data={"trainer.inference.webdemo": ["static/*"]},
)
