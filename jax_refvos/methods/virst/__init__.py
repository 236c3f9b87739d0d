"""VIRST (CVPR 2026): VideoChat-Flash `[SEG]` states -> Spatio-Temporal Fusion -> SAM 2.1 with
the Temporal Dynamic Anchor Updater, as a `methods.base.Method` (docs/virst.md).

    model.py          the model (`Virst`): UMT + ToMe -> Qwen2 -> SegPrompter -> propagation
    presets.py        tiny / 7b configs; sam2_config.py: SAM2 from VIRST's yaml
    fusion*.py, seg_prompter.py, anchor_updater.py, propagation.py   its modules
    train_forward.py  the training forward; losses.py its losses; batch.py batch -> loss
    config.py         its config sections; train_setup.py a training run from a config
    record.py         what workdirs record of the model; workdir.py loading from disk
    inference.py      whole-video inference of every expression; predictor.py the `Predictor`
    weights.py        the released checkpoint -> a weights dir; memory_plan.py 7b memory
    method.py         the protocol wiring: `METHOD` (what `methods/registry.py` names)
"""
