"""refvos baseline: write model-free reference predictions in the official layout.

--kind union (every expression predicts all annotated objects of its video), oracle (the ground
truth: scores 100), empty, or first_mask (each target object's first mask copied to every later
frame: semi-supervised VOS without tracking).

  refvos baseline --dataset_root data/synth --split valid_u --kind union \
      --pred_dir runs/quickstart/union/valid_u
"""

import sys

from absl import flags

from jax_refvos.main import cli


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("dataset_root", None, "Folder holding the split folders.", flag_values=fv)
    flags.DEFINE_string("split", None, "Split, e.g. valid_u.", flag_values=fv)
    flags.DEFINE_string("pred_dir", None, "Output folder (created).", flag_values=fv)
    flags.DEFINE_enum(
        "kind",
        "union",
        ["union", "oracle", "empty", "first_mask"],
        "Which baseline.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --pred_dir.", flag_values=fv)
    for name in ("dataset_root", "split", "pred_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def run(fv: flags.FlagValues) -> None:
    from jax_refvos.eval import baselines

    n = baselines.write_baseline(
        fv.dataset_root, fv.split, fv.pred_dir, fv.kind, overwrite=fv.overwrite
    )
    print(f"wrote the {fv.kind} baseline for {n} expressions to {fv.pred_dir}")


def main(argv=None) -> int:
    return cli.run_command("baseline", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
