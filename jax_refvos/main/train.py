"""refvos train: train VIRST with a config, sharded over the mesh it names, resumable.

  refvos train --config configs/virst.py:variant=tiny,steps=200 --workdir runs/virst_tiny

--config is configs/X.py[:key=value,...] (see the config's docstring for its arguments). The
workdir gets config.json, metrics.jsonl, tensorboard/ and checkpoints/; rerunning the same
command resumes from the newest checkpoint, and SIGTERM / Ctrl-C saves one and exits.
"""

import logging
import sys
import time

from absl import flags

from jax_refvos.main import cli


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "configs/X.py[:key=value,...].", flag_values=fv)
    flags.DEFINE_string(
        "workdir", None, "Run directory (created; resumed when present).", flag_values=fv
    )
    for name in ("config", "workdir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def run(fv: flags.FlagValues) -> None:
    from jax_refvos import config_lib
    from jax_refvos.training import virst_loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.perf_counter()
    c = config_lib.load(fv.config)
    last = virst_loop.train(c, fv.workdir)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
    print(f"trained to step {last.get('step', '?')}: {summary} -> {fv.workdir}")
    print(f"took {time.perf_counter() - start:.1f} s", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run_command("train", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
