"""Stand-ins for the cloud runtimes that EXECUTE the launcher's own requests on this machine.

Tests (and a developer, by hand) run what `python -m launch train|deploy` would send, the way
Vertex AI runs it, to check the seams no unit test sees: the environment the job gets, where
its artifacts land, what a preemption or a worker restart does to it. Each module cites the
Google documentation it follows and says what it leaves out.

gs:// paths are mapped to folders under a local "bucket root" (launch.local_cloud.buckets):
TensorFlow's own gs:// file system has Google's endpoints built in, so the GCS emulator the
other tests use cannot stand in for it inside the trainer.
"""
