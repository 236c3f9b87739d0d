"""refvos train: train a method with a config, sharded over the mesh it names, resumable.

  refvos train --config configs/virst.py:variant=tiny,steps=200 --workdir runs/virst_tiny

--config is configs/X.py[:key=value,...] (see the config's docstring for its arguments); the
config's `method` key names the method (`methods/registry.py`). The workdir gets config.json
(the config, its method and the record of the model), metrics.jsonl, tensorboard/ and
checkpoints/; rerunning the same command resumes from the newest checkpoint, and SIGTERM /
Ctrl-C saves one and exits. A bad config (an unknown argument or key, a variant or mesh that
does not exist, missing data) stops with one `error:` line before anything is written.

Several processes (hosts) train one model: run the same command on each with
--coordinator_address HOST:PORT --num_processes N --process_id I, or nothing extra where JAX
finds the cluster itself (SLURM steps, Cloud TPU slices; `jax_refvos/distributed.py`). The
config's `batch` is per process; the workdir must be one directory all processes can reach.
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
    flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0 (multi-process).", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "Processes in the run.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index, 0-based.", flag_values=fv)
    flags.DEFINE_bool(
        "auto_distributed",
        True,
        "Without the three flags above, join a cluster JAX detects (SLURM, TPU slice).",
        flag_values=fv,
    )


def run(fv: flags.FlagValues) -> None:
    from jax_refvos import config_lib, distributed

    start = time.perf_counter()
    c = config_lib.load(fv.config)  # before joining: a bad config fails every process alike
    joined = distributed.initialize(
        fv.coordinator_address, fv.num_processes, fv.process_id, auto=fv.auto_distributed
    )
    main = distributed.is_main_process()
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format=f"%(asctime)s p{distributed.process_index()} %(levelname)s %(message)s",
    )
    # Orbax logs every step of every save at INFO through absl; keep the run's log readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger(__name__).info("%s", joined)
    from jax_refvos.training import loop  # after joining: nothing may touch a backend first

    last = loop.train(c, fv.workdir)
    if main and not last:
        print(f"{fv.workdir}: already trained to step {c.steps}; nothing to do")
    elif main:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
        print(f"trained to step {last.get('step', '?')}: {summary} -> {fv.workdir}")
        print(f"took {time.perf_counter() - start:.1f} s", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run_command("train", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
