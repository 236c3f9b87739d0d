r"""Train SAM 2 (promptable video segmentation): `tiny` from scratch on a CPU, `large` fine-tuned
from an official SAM 2.1 checkpoint.

  refvos train --config configs/sam2.py:variant=tiny --workdir runs/sam2_tiny
  refvos evaluate --workdir runs/sam2_tiny --split valid_u
  refvos train --config configs/sam2.py:variant=large,init=sam2.1_hiera_large.pt,records=R \
      --workdir runs/sam2_large

Arguments (`:key=value,...`): variant (tiny | large), steps, ckpt_every, log_every, batch (clips
per process and step), lr, seed, init (large: an official `.pt`, architecture `model_cfg`, or a
`refvos import-weights --kind sam2` weights dir), model_cfg (default sam2.1_hiera_l), records
(the training records, a `refvos convert` output; tiny: the synthetic benchmark's by default),
image_size (tiny 128; large the checkpoint's 1024), width (tiny d_model), frames (clip length,
8), objects (per clip, 3), corrections (corrective clicks per clicked frame, 7),
freeze_encoder (true: the image encoder does not train), multimask_tracking (0 | 1: three
candidate masks on tracked frames; default 1 for large as SAM 2.1, 0 for tiny), mesh (as
configs/virst.py), synth (default | tiny), data_dir (where synth/ and records/ live).

Training follows the official trainer (docs/sam2.md): 8-frame clips; the first frame (and
sometimes a second) prompted with the GT mask (P 0.5), a box (0.25) or a click (0.25), 7
corrective clicks on clicked frames and on one random tracked frame of half the clicked clips;
memory propagation through the clip as one compiled scan; focal + Dice on the best of the
multimask outputs, IoU L1, object-score BCE, weighted 20 : 1 : 1 : 1.
"""

import ml_collections

from jax_refvos import config_lib

SYNTH_VARIANTS = {  # configs/synth_benchmark.py's variants
    "default": dict(num_videos=300, height=240, width=320, num_frames=24),
    "tiny": dict(num_videos=8, height=64, width=96, num_frames=8),
}
VARIANTS = ("tiny", "large")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(
        arg,
        variant="tiny",
        steps=-1,
        ckpt_every=-1,
        log_every=10,
        batch=-1,
        lr=-1.0,
        seed=0,
        init="",
        model_cfg="sam2.1_hiera_l",
        records="",
        image_size=-1,
        width=64,
        frames=8,
        objects=3,
        corrections=7,
        freeze_encoder=False,
        multimask_tracking=-1,
        mesh="auto",
        synth="default",
        data_dir="data",
    )
    if arg.variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg.variant!r}; choose from {VARIANTS}")
    tiny = arg.variant == "tiny"
    c = ml_collections.ConfigDict()
    c.method = "sam2"
    c.variant = arg.variant
    c.seed = arg.seed
    c.steps = arg.steps if arg.steps != -1 else (400 if tiny else 10_000)
    c.log_every = arg.log_every
    c.ckpt_every = arg.ckpt_every if arg.ckpt_every != -1 else (100 if tiny else 1000)
    c.keep_checkpoints = 3
    c.mesh = config_lib.mesh_arg(arg.mesh)
    c.skip_nonfinite = False
    c.peak_flops = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.preset = arg.variant
    c.model.init = arg.init
    c.model.model_cfg = arg.model_cfg
    c.model.image_size = arg.image_size if arg.image_size != -1 else (128 if tiny else 1024)
    c.model.width = arg.width
    c.model.freeze_image_encoder = bool(arg.freeze_encoder)
    # DEVIATION(sam2): tiny tracks with one mask per frame (docs/sam2.md); large keeps SAM 2.1's 3.
    mm = arg.multimask_tracking
    if mm not in (-1, 0, 1):
        raise ValueError(f"multimask_tracking={mm}: choose 0 or 1 (or leave it out)")
    c.model.multimask_tracking = bool(mm) if mm != -1 else not tiny

    c.synth = dict(SYNTH_VARIANTS[arg.synth], seed=arg.seed)
    c.data = ml_collections.ConfigDict()
    c.data.synth_root = f"{arg.data_dir}/synth" if tiny and not arg.records else ""
    c.data.train_records = arg.records or (f"{arg.data_dir}/records/synth_train" if tiny else "")
    c.data.batch_size = arg.batch if arg.batch != -1 else (2 if tiny else 1)
    c.data.frames = arg.frames
    c.data.max_objects = arg.objects
    c.data.hflip_prob = 0.5 if not tiny else 0.0
    c.data.num_workers = 0

    c.optim = ml_collections.ConfigDict()
    # The official MOSE fine-tuning: base lr 5e-6 (vision 3e-6), AdamW wd 0.1, cosine.
    c.optim.lr = arg.lr if arg.lr > 0 else (1e-3 if tiny else 5e-6)
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 20 if tiny else 100
    c.optim.weight_decay = 0.0 if tiny else 0.1
    c.optim.clip_norm = 0.1
    c.optim.grad_accum = 1

    c.loss = ml_collections.ConfigDict()
    c.loss.mask_weight = 20.0
    c.loss.dice_weight = 1.0
    c.loss.iou_weight = 1.0
    c.loss.class_weight = 1.0
    c.loss.num_correction_points = arg.corrections
    c.loss.prob_sample_from_gt = 0.1
    return c
