"""configs/sam2.py -> the model config `refvos train` builds (`Sam2Method.model_config`)."""

from pathlib import Path

import pytest

from jax_refvos import config_lib
from jax_refvos.errors import InputError
from jax_refvos.methods.sam2.method import METHOD
from jax_refvos.methods.sam2.workdir import config_from_record, make_record

CONFIG = str(Path(__file__).resolve().parents[3] / "configs" / "sam2.py")


def _model_config(arg: str):
    return METHOD.model_config(config_lib.load(CONFIG, arg, lock=False))


@pytest.mark.parametrize(
    "arg, multimask",
    [
        ("variant=tiny", False),  # DEVIATION(sam2): one mask on tracked frames from scratch
        ("variant=large", True),  # SAM 2.1's flag
        ("variant=tiny,multimask_tracking=1", True),
        ("variant=large,multimask_tracking=0", False),
    ],
)
def test_multimask_tracking_follows_the_variant_and_the_override(arg, multimask):
    assert _model_config(arg).multimask_output_for_tracking is multimask


def test_the_workdir_record_keeps_the_tracking_flag():
    cfg = _model_config("variant=tiny,image_size=64,width=32")
    back = config_from_record(make_record(cfg), "config.json")
    assert back == cfg and back.multimask_output_for_tracking is False


def test_a_tracking_flag_other_than_0_or_1_is_refused():
    with pytest.raises(InputError, match="sam2.py: multimask_tracking=2: choose 0 or 1"):
        config_lib.load(CONFIG, "variant=tiny,multimask_tracking=2", lock=False)
