"""refvos convert: one split of a raw RVOS benchmark -> record shards + manifest.json.

  refvos convert --dataset mevis --root data/mevis --split train --out_dir data/records/mevis_train
  refvos convert --dataset synth --root data/synth --split valid_u \
      --out_dir data/records/synth_valid_u --format tfrecord --num_shards 2

--root is the dataset root as distributed (data/README.md shows each layout). Every frame is
decoded and every mask checked while converting; bad input stops with one message naming the
file (no manifest is written), or with --skip_bad the video is left out and listed in the
manifest. An interrupted run resumes: re-running the same command skips the finished shards.
"""

import sys
import time

from absl import flags

from jax_refvos.main import cli

_DATASETS = ["mevis", "refytvos", "davis17", "revos", "reasonvos", "lvvis", "synth"]


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("dataset", None, _DATASETS, "Benchmark layout to read.", flag_values=fv)
    flags.DEFINE_string("root", None, "Dataset root as distributed.", flag_values=fv)
    flags.DEFINE_string("split", None, "Split, e.g. train, valid_u, valid.", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Directory for the shards and manifest.", flag_values=fv)
    flags.DEFINE_enum(
        "format",
        "arrayrecord",
        ["arrayrecord", "tfrecord"],
        "arrayrecord (random access; for training) or tfrecord (tf.train.Example, sequential).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_shards", None, "Shards (default: one per 64 videos).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Reader processes (default: min(4, cores); 0 = in-process). Output does not depend on it.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "skip_bad", False, "Leave out videos with bad input and list them.", flag_values=fv
    )
    for name in ("dataset", "root", "split", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def run(fv: flags.FlagValues) -> None:
    from jax_refvos.datasets import convert

    start = time.perf_counter()
    m = convert.convert_dataset(
        fv.dataset,
        fv.root,
        fv.split,
        fv.out_dir,
        fmt=fv.format,
        num_shards=fv.num_shards,
        num_workers=fv.num_workers,
        skip_bad=fv.skip_bad,
        progress=True,
    )
    c = m["counts"]
    state = "already converted" if m["up_to_date"] else "converted"
    print(
        f"{state}: {fv.dataset}/{fv.split} -> {fv.out_dir}: {c['videos']} videos,"
        f" {c['expressions']} expressions, {c['frames']} frames in {len(m['shards'])}"
        f" {m['format']} shard(s)"
    )
    for s in m["skipped"]:
        print(f"skipped {s['video_id']}: {s['error']}")
    print(f"took {time.perf_counter() - start:.1f} s", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run_command("convert", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
