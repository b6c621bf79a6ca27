"""Arguments that are neither our flags nor Beam pipeline options stop the job (Beam only logs)."""

import pytest
from absl import flags

from beam_preprocess.arguments import UnknownFlagError, check_beam_arguments

OURS = ["input", "output_dir", "image_size", "num_shards", "shard_seed", "flagfile"]


@pytest.mark.parametrize("args", [
    [],
    ["--runner", "DirectRunner", "--direct_num_workers", "2",
     "--direct_running_mode", "multi_processing"],
    ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location",
     "gs://b/tmp", "--setup_file=./setup.py", "--template_location=job.json"],
    ["--experiments", "a", "--experiments=b", "--no_use_public_ips", "--save_main_session"],
])
def test_beam_pipeline_options_pass(args):
    check_beam_arguments(args, OURS)


@pytest.mark.parametrize("args, message", [
    (["--image_szie", "48"], "unknown flag --image_szie (did you mean --image_size?)"),
    (["--runner", "DirectRunner", "--image_szie=48"],
     "unknown flag --image_szie (did you mean --image_size?)"),
    (["--runer=DataflowRunner"], "unknown flag --runer (did you mean --runner?)"),
    (["--zzzz"], "unknown flag --zzzz"),
    (["-v"], "unknown flag -v"),
    (["fer2013.csv"], "unexpected argument 'fer2013.csv' (flags are --name=value)"),
])
def test_anything_else_is_an_error_naming_it(args, message):
    with pytest.raises(UnknownFlagError) as error:
        check_beam_arguments(args, OURS)
    assert str(error.value) == message
    assert isinstance(error.value, flags.Error)  # so __main__ prints it and exits 2
