"""jax_refvos/distributed.py: flag validation and cluster detection (no cluster is joined)."""

import pytest

from jax_refvos import distributed
from jax_refvos.errors import InputError


@pytest.mark.parametrize(
    "env, want",
    [
        ({}, None),
        ({"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, None),  # one task: nothing to join
        ({"SLURM_NTASKS": "4"}, None),  # the batch script itself, outside srun
        ({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"}, "SLURM"),
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, None),  # a single-host TPU VM
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "Cloud TPU slice"),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, "JAX_COORDINATOR_ADDRESS"),
    ],
)
def test_detected_cluster(env, want):
    assert distributed.detected_cluster(env) == want


@pytest.mark.parametrize(
    "args, match",
    [
        (("h:1", None, None), "go together"),
        ((None, 2, 0), "go together"),
        (("host", 2, 0), "HOST:PORT"),
        (("h:1", 2, 2), "not in"),
        (("h:1", 0, 0), "not in"),
    ],
)
def test_bad_flags_are_one_clear_error(args, match):
    with pytest.raises(InputError, match=match):
        distributed.initialize(*args)


def test_single_process_joins_nothing(monkeypatch):
    for key in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.initialize() == "single process"
    assert distributed.initialize("h:1", 1, 0) == "single process (--num_processes 1)"
    assert distributed.initialize(auto=False) == "single process"
