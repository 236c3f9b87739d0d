r"""Train VIRST: `tiny` (a laptop CPU, the synthetic benchmark) or `7b` (the paper's shapes).

  refvos train --config configs/virst.py:variant=tiny,steps=200 --workdir runs/virst_tiny
  refvos train --config configs/virst.py:variant=7b,init=W,records=R --workdir runs/virst_7b

Arguments (`:key=value,...`): variant (tiny | 7b), steps, ckpt_every, log_every, batch (videos per
process and step), lr, seed, init (7b: a weights dir from `refvos import-weights --kind virst`),
records (the training records, a `refvos convert` output; tiny: the synthetic benchmark's by
default), vlm_frames / sam_frames (frames sampled per video for the VLM and for SAM 2 /
ST-Fusion; tiny 8 / 8, 7b 64 / 32), mesh (`auto`, the default: as much data parallelism as the
global batch allows, the rest of the devices model-parallel; or data x fsdp x model, e.g.
`mesh=1x4x2`, `mesh=-1x1x1`; -1 = the rest), synth (default | tiny: the synthetic benchmark's
size), data_dir (where synth/ and records/ live).

`tiny` (methods/virst/presets.py::virst_tiny) trains every parameter from scratch on the
synthetic benchmark (`data/synth`, converted to `data/records/synth_{train,valid_u}`; created
first when missing). `7b` follows reference/virst.md §6: starts from imported official weights
(every shape and the tokenizer from the weights dir), frozen UMT and Hiera, LoRA on the LLM's
decoder layers, SegPrompter / ISF / SAM2 decoder trained, AdamW lr 1e-5; without `records` it
stops before anything is written (the data must be converted first, docs/training.md).
"""

import ml_collections

from jax_refvos import config_lib

SYNTH_VARIANTS = {  # configs/synth_benchmark.py's variants
    "default": dict(num_videos=300, height=240, width=320, num_frames=24),
    "tiny": dict(num_videos=8, height=64, width=96, num_frames=8),
}

VARIANTS = ("tiny", "7b")


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
        records="",
        vlm_frames=-1,
        sam_frames=-1,
        mesh="auto",
        synth="default",
        data_dir="data",
    )
    if arg.variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg.variant!r}; choose from {VARIANTS}")
    tiny = arg.variant == "tiny"
    c = ml_collections.ConfigDict()
    c.method = "virst"
    c.variant = arg.variant
    c.seed = arg.seed
    c.steps = arg.steps if arg.steps != -1 else (600 if tiny else 100_000)
    c.log_every = arg.log_every
    c.ckpt_every = arg.ckpt_every if arg.ckpt_every != -1 else (100 if tiny else 1000)
    c.keep_checkpoints = 3
    c.mesh = config_lib.mesh_arg(arg.mesh)
    c.skip_nonfinite = False  # True: a step with a NaN/Inf loss or gradient is skipped, not fatal
    c.peak_flops = 0.0  # per device, for MFU (0: the vendor's figure, or measured on CPU)

    c.model = ml_collections.ConfigDict()
    c.model.preset = arg.variant
    c.model.init = arg.init  # weights dir to start from ("" = random init)
    c.model.image_size = 128 if tiny else 1024
    c.model.vlm_size = 80 if tiny else 448
    c.model.llm_width = 64 if tiny else 3584
    c.model.sam_width = 256  # SAM2 d_model (tiny only; the 7b preset is SAM2.1-L's 256)
    c.model.fusion_grid = 0  # tiny only: ST-Fusion grid side (0 = image_size / 128)
    c.model.initial_seg_fusion = True
    c.model.lora_rank = 0 if tiny else 64  # LoRA on the LLM's decoder layers (0 = none)
    c.model.lora_alpha = 16.0

    # The synthetic benchmark the tiny preset trains on (also `refvos synth --config` input).
    c.synth = dict(SYNTH_VARIANTS[arg.synth], seed=arg.seed)
    c.data = ml_collections.ConfigDict()
    c.data.synth_root = f"{arg.data_dir}/synth" if tiny and not arg.records else ""
    c.data.train_records = arg.records or (f"{arg.data_dir}/records/synth_train" if tiny else "")
    # "" = init's own tokenizer, without init the synthetic one; relative = inside init
    c.data.tokenizer_dir = "" if tiny else "tokenizer"
    c.data.batch_size = arg.batch if arg.batch != -1 else (2 if tiny else 1)
    c.data.vlm_frames = arg.vlm_frames if arg.vlm_frames != -1 else (8 if tiny else 64)
    c.data.sam_frames = arg.sam_frames if arg.sam_frames != -1 else (8 if tiny else 32)
    c.data.max_expressions = 2 if tiny else 3
    c.data.max_text_len = 128 if tiny else 512
    c.data.num_workers = 0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = arg.lr if arg.lr > 0 else (1e-3 if tiny else 1e-5)
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 20 if tiny else 140
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.optim.grad_accum = 1

    c.anchors = ml_collections.ConfigDict()
    c.anchors.use_cond_frames = True
    c.anchors.dynamic_update = False

    c.loss = ml_collections.ConfigDict()
    c.loss.ce_weight = 1.0
    c.loss.bce_weight = 1.0
    c.loss.dice_weight = 1.0
    c.loss.iou_weight = 0.05
    c.loss.occ_weight = 0.05

    c.trainable = "everything" if tiny else "virst_paper"
    return c
