"""Launchers: Cloud Build images, Dataflow preprocessing, Vertex AI training and endpoints.

Importing the package turns TensorFlow's oneDNN CPU kernels on unless the user chose
(beam_preprocess.cpu_kernels): it must happen before anything imports TensorFlow.
"""

from beam_preprocess.cpu_kernels import use_onednn_unless_set

use_onednn_unless_set()
