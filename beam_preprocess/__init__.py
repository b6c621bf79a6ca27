"""Apache Beam job: fer2013.csv -> validated, sharded 224x224 TFRecords with a manifest.

Importing the package does nothing else: the GCS-emulator credential shim
(gcs_emulator.skip_credential_lookup_when_emulated) runs where it is needed, in the driver's
run() and in the setup() of the DoFns that touch files.
"""
