"""refvos score: J, F and J&F of predictions on a MeViS-layout split, equal to the official code.

Predictions: <pred_dir>/<vid>/<exp_id>/<frame>.png, single channel, any non-zero pixel is
foreground. Writes metrics.json (values in percent) with --out and prints a short table.

  refvos score --dataset_root data/synth --split valid_u --pred_dir runs/x/eval/valid_u \
      --out runs/x/eval/valid_u/metrics.json
"""

import sys
import time

from absl import flags

from jax_refvos.main import cli


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("dataset_root", None, "Folder holding the split folders.", flag_values=fv)
    flags.DEFINE_string("split", None, "Split to score, e.g. valid_u.", flag_values=fv)
    flags.DEFINE_string("pred_dir", None, "Folder with <vid>/<exp_id>/<frame>.png.", flag_values=fv)
    flags.DEFINE_string("out", None, "Where to write metrics.json (optional).", flag_values=fv)
    flags.DEFINE_boolean(
        "allow_missing",
        False,
        "Score expressions with missing predictions 0 instead of failing.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_workers", None, "Worker processes (default: all cores).", lower_bound=0, flag_values=fv
    )
    for name in ("dataset_root", "split", "pred_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def run(fv: flags.FlagValues) -> None:
    from jax_refvos.eval import score  # keeps `refvos --help` fast

    start = time.perf_counter()
    result = score.score_split(
        fv.dataset_root,
        fv.split,
        fv.pred_dir,
        allow_missing=fv.allow_missing,
        num_workers=fv.num_workers,
    )
    if fv.out:
        score.write_metrics(fv.out, result)
    title = f"{fv.split} of {fv.dataset_root}: {result.num_expressions} expressions, {fv.pred_dir}"
    print(score.format_table(result, title))
    extra = f", wrote {fv.out}" if fv.out else ""
    print(f"scored in {time.perf_counter() - start:.1f} s{extra}", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run_command("score", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
