"""VIRST workdirs for inference: an imported weights dir or a `refvos train` run.

- weights dir (`refvos import-weights --kind virst`): config.json with kind "virst", the
  components' weights and `tokenizer/`;
- training workdir (`refvos train`): config.json + checkpoints/ (the newest checkpoint is used;
  the model as trained, its Initial ST-Fusion switch included).
"""

from pathlib import Path

from jax_refvos.errors import InputError


def check_workdir(workdir: Path) -> Path | None:
    """Cheap checks before any loading: returns a weights dir's tokenizer folder, or None for a
    training workdir. Raises InputError naming what is wrong."""
    from jax_refvos.convert import weights_dir
    from jax_refvos.training import virst_loop

    workdir = Path(workdir)
    if virst_loop.is_training_workdir(workdir):
        if not any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir()):
            raise InputError(f"{workdir}/checkpoints: no checkpoint yet")
        return None
    if not (workdir / "config.json").is_file():
        raise InputError(f"{workdir}: not a VIRST weights dir or training workdir (no config.json)")
    meta = weights_dir.read_meta(workdir)
    if meta.get("kind") != "virst":
        raise InputError(f"{workdir}: weights kind {meta.get('kind')!r}, need 'virst'")
    tok_dir = workdir / meta.get("tokenizer", "tokenizer")
    if not tok_dir.is_dir():
        raise InputError(f"{tok_dir}: tokenizer directory missing")
    return tok_dir


def assemble_from_weights(
    workdir: Path, *, initial_seg_fusion: bool, seg_token_id: int, dynamic_anchors: bool = False
):
    """A `model.virst.Virst` from the components `convert.virst.load_virst` rebuilds."""
    from flax import nnx

    from jax_refvos.convert import virst as cvirst
    from jax_refvos.model import anchor_updater as au
    from jax_refvos.model import virst

    parts = cvirst.load_virst(workdir)
    cfg = virst.VirstConfig(
        umt=parts["vision"].cfg,
        tome=parts["projector"].cfg,
        lm=parts["lm"].cfg,
        sam2=parts["sam2"].cfg,
        isf=parts["initial_seg_fusion"].cfg,
        segprompter=parts["seg_prompter"].cfg,
        initial_seg_fusion=initial_seg_fusion,
        seg_token_id=seg_token_id,
        anchors=au.AnchorConfig(dynamic_update=dynamic_anchors),
    )
    model = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    model.vision_tower = parts["vision"]
    model.mm_projector = parts["projector"]
    model.lm = parts["lm"]
    model.seg_model = parts["sam2"]
    model.initial_seg_fusion_module = parts["initial_seg_fusion"]
    model.seg_prompter = parts["seg_prompter"]
    return model


def load_model(workdir: Path, *, initial_seg_fusion: bool = False, dynamic_anchors: bool = False):
    """(Virst, TextTokenizer) of a workdir (see the module docstring). `initial_seg_fusion`
    applies to weights dirs (the released eval runs without it); `dynamic_anchors` to both."""
    import dataclasses

    from jax_refvos.pipeline.tokenizer import SEG_TOKEN, load_tokenizer
    from jax_refvos.training import virst_loop

    workdir = Path(workdir)
    tok_dir = check_workdir(workdir)
    if tok_dir is None:
        model, tok = virst_loop.load_trained(workdir)
        anchors = dataclasses.replace(model.cfg.anchors, dynamic_update=dynamic_anchors)
        model.cfg = dataclasses.replace(model.cfg, anchors=anchors)
        return model, tok
    tok = load_tokenizer(str(tok_dir), "virst")
    model = assemble_from_weights(
        workdir,
        initial_seg_fusion=initial_seg_fusion,
        seg_token_id=tok.token_id(SEG_TOKEN),
        dynamic_anchors=dynamic_anchors,
    )
    return model, tok
