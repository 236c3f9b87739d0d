#!/usr/bin/env bash
# Single-host GPU training: one process drives every local GPU (the mesh spans them).
#
#   bash launch/train_gpu.sh CONFIG WORKDIR [more refvos train flags]
#   bash launch/train_gpu.sh "configs/virst.py:variant=7b,init=weights/virst,records=data/records/train,mesh=1x8x1" runs/virst_7b
#
# Needs an environment with jax[cuda12] and jax_refvos installed (REFVOS=path/to/refvos to pick
# one). Rerunning the same command resumes; SIGTERM saves a checkpoint and exits.
set -euo pipefail
CONFIG="${1:?usage: launch/train_gpu.sh CONFIG WORKDIR [flags]}"
WORKDIR="${2:?usage: launch/train_gpu.sh CONFIG WORKDIR [flags]}"
shift 2
# Most of the GPU for XLA's allocator; overlap collectives with compute; reuse compiled steps.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/jax_refvos/xla}"
exec "${REFVOS:-refvos}" train --config "$CONFIG" --workdir "$WORKDIR" --noauto_distributed "$@"
