"""refvos evaluate: a model on every expression of a converted split -> PNGs, J&F (or a submission).

  refvos evaluate --workdir W --split valid_u [--dataset_root data/synth]
      [--records data/records/synth_valid_u] [--max_videos N] [--seed 42] [--chunk_size 8]
      [--expr_batch 8] [--initial_seg_fusion] [--dynamic_anchors] [--option KEY=VALUE ...]
      [--num_workers N] [--overwrite]

--workdir is a weights dir written by `refvos import-weights` (of a method: `--kind virst`) or a
`refvos train` workdir (its newest checkpoint); its recorded method runs (`methods/registry.py`).
--records is the split's `refvos convert` output; by default `<parent of dataset_root>/records/
<name of dataset_root>_<split>` (data/synth + valid_u -> data/records/synth_valid_u, the
quickstart's naming). Every video is run once for all its expressions (VIRST: one vision pass,
batched LLM, one propagation; `methods/virst/inference.py`), frames drawn with --seed as
`refvos predict --seed` draws them (VIRST draws per expression, at random).
--expr_batch, --initial_seg_fusion and --dynamic_anchors are VIRST's options, --option KEY=VALUE
any method's (`Method.load_options`); an option the method does not take is an error.
--initial_seg_fusion applies to weights dirs (a training workdir keeps the setting it trained
with).

Written to W/eval/<split>/ (it appears complete or not at all):
  pred/<vid>/<exp_id>/<frame>.png   0/255 at the video's resolution, every frame (official layout)
  metrics.json   splits with ground truth (MeViS valid_u, synth, Ref-DAVIS17, ReVOS): J, F, J&F
                 in percent as `refvos score` (per expression: mean over all frames of the union
                 of its targets; split: mean over expressions), ground truth read from the
                 records; ReVOS adds "by_kind" (referring / reasoning / no_target) and
                 "overall" = the mean of the referring and reasoning means (VIRST eval_revos.py)
  submission.zip splits without ground truth (MeViS valid: <vid>/<exp_id>/<frame>.png at the
                 zip root; Ref-YouTube-VOS valid: Annotations/<vid>/<exp_id>/<frame>.png)
  eval.json      the method, the settings and, per video, what it sampled (VIRST: the VLM /
                 ST-Fusion frames and anchors)
"""

import sys
from pathlib import Path

from absl import flags

from jax_refvos.main import cli

# Flags that are method options (`Method.load_options`): passed on only when given.
METHOD_OPTIONS = ("expr_batch", "initial_seg_fusion", "dynamic_anchors")


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "workdir", None, "Weights dir (import-weights) or training workdir.", flag_values=fv
    )
    flags.DEFINE_string("split", None, "Split, e.g. valid_u, valid.", flag_values=fv)
    flags.DEFINE_string(
        "dataset_root", "data/synth", "Dataset root; names the default --records.", flag_values=fv
    )
    flags.DEFINE_string(
        "records", None, "The split's records (default: from --dataset_root).", flag_values=fv
    )
    flags.DEFINE_integer(
        "max_videos", None, "Only the first N videos (smoke tests).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer("seed", 42, "Seed of each video's frame draw.", flag_values=fv)
    flags.DEFINE_integer(
        "chunk_size", 8, "Frames per compiled propagation chunk.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer(
        "expr_batch", 8, "VIRST: expressions per LLM batch.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_boolean(
        "initial_seg_fusion",
        False,
        "VIRST, weights dirs: Initial ST-Fusion (off in its eval; training workdirs keep theirs).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "dynamic_anchors", False, "VIRST: the paper's dynamic anchor update.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Scoring processes (default: all cores).",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_multi_string(
        "option", [], "A method option KEY=VALUE (repeatable), e.g. expr_batch=4.", flag_values=fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing W/eval/<split>.", flag_values=fv)
    for name in ("workdir", "split"):
        flags.mark_flag_as_required(name, flag_values=fv)


def body(fv: flags.FlagValues) -> None:
    from jax_refvos.eval import runner

    records = Path(fv.records) if fv.records else runner.default_records(fv.dataset_root, fv.split)
    settings = runner.EvalSettings(
        split=fv.split,
        records=records,
        seed=fv.seed,
        chunk_size=fv.chunk_size,
        max_videos=fv.max_videos,
        num_workers=fv.num_workers,
        overwrite=fv.overwrite,
    )
    print(runner.evaluate(fv.workdir, settings, cli.method_options(fv, METHOD_OPTIONS)))


def main(argv=None) -> int:
    return cli.run_command("evaluate", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
