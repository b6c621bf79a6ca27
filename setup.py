"""Packaging for vggface-emotion.

Dataflow workers install this distribution through `--setup_file`, and Vertex AI
installs its sdist before running `python -m trainer`, so the ranges below are the
versions the code is known to work with, not wishes.
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
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "apache-beam[gcp]>=2.77,<3",
        "google-cloud-storage>=3,<4",
        "absl-py>=2.1,<3",
        "numpy>=2,<3",
        "h5py>=3.10,<4",
        "opencv-python-headless>=4.14,<5",  # 5.x removed the Haar face detector
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "cloud": ["google-cloud-aiplatform>=1.100,<2", "build>=1.2,<2"],
        "dev": ["pytest>=8,<10", "ruff>=0.15,<1", "gcp-storage-emulator>=2024.1", "build>=1.2,<2"],
    },
)
