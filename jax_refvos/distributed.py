"""Multi-process start-up: `jax.distributed.initialize` from flags or from the cluster.

    refvos train ... --coordinator_address HOST:PORT --num_processes N --process_id I

Without the flags, a cluster that `jax.distributed.initialize()` can read by itself is detected
from its environment (a multi-task SLURM step, a multi-host Cloud TPU slice, Open MPI, or
`JAX_COORDINATOR_ADDRESS`), and a single process runs otherwise. Initialisation must come before
anything touches a JAX backend. On CPU the collectives go over gloo (jax_stack.md §2.5).
"""

import logging
import os

import jax

from jax_refvos.errors import InputError

log = logging.getLogger(__name__)


def detected_cluster(env: os._Environ | dict | None = None) -> str | None:
    """The cluster `jax.distributed.initialize()` can configure itself from, or None."""
    env = os.environ if env is None else env
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_STEP_ID" in env:
        return "SLURM"
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        return "Cloud TPU slice"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = True,
) -> str:
    """Joins the processes of a multi-process run; returns a line saying what was done.

    Args:
        coordinator_address: "host:port" of process 0's coordinator service; with it,
            `num_processes` and `process_id` are required too.
        auto: without the flags, call `jax.distributed.initialize()` when `detected_cluster()`
            finds one; False keeps a single process.

    Raises:
        InputError: a partial or inconsistent set of flags.
    """
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise InputError(
                "--coordinator_address, --num_processes and --process_id go together "
                f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})"
            )
        if ":" not in coordinator_address:
            raise InputError(
                f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}"
            )
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise InputError(
                f"--process_id {process_id} not in [0, --num_processes {num_processes})"
            )
        if num_processes == 1:
            return "single process (--num_processes 1)"
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return _joined(f"coordinator {coordinator_address}")
    cluster = detected_cluster() if auto else None
    if cluster is None:
        return "single process"
    jax.distributed.initialize()
    return _joined(f"detected {cluster}")


def _joined(how: str) -> str:
    return (
        f"process {jax.process_index()} of {jax.process_count()} ({how}); "
        f"{jax.local_device_count()} local of {jax.device_count()} devices"
    )


def process_index() -> int:
    return jax.process_index()


def is_main_process() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """All processes wait here (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
