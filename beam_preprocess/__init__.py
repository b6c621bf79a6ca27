"""Apache Beam job: fer2013.csv -> validated, sharded 224x224 TFRecords with a manifest."""

from beam_preprocess.gcs_emulator import skip_credential_lookup_when_emulated

# Runs in every process that unpickles this package's transforms (DirectRunner workers too).
skip_credential_lookup_when_emulated()
