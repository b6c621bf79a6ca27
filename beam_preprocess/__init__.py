"""Apache Beam job: fer2013.csv -> validated, sharded 224x224 TFRecords with a manifest.

Importing the package sets one default and does nothing else: TF_ENABLE_ONEDNN_OPTS=1 unless
the user set it (cpu_kernels: TensorFlow reads it at its import, and leaves oneDNN off on AVX2
CPUs). The GCS-emulator credential shim (gcs_emulator.skip_credential_lookup_when_emulated)
runs where it is needed, in the driver's run() and in the setup() of the DoFns that touch files.
"""

from beam_preprocess.cpu_kernels import use_onednn_unless_set

use_onednn_unless_set()
