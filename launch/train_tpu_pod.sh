#!/usr/bin/env bash
# TPU pod slice: the same `refvos train` on every host of the slice, over gcloud ssh.
#
#   bash launch/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR
#   bash launch/train_tpu_pod.sh my-v5p-256 us-east5-a \
#     "configs/virst.py:variant=7b,init=/mnt/shared/weights/virst,records=/mnt/shared/records/train,mesh=-1x16x1" /mnt/shared/runs/virst_7b
#
# Each host must already have the repository at $REPO_DIR (default ~/jax_refvos) with a .venv
# holding jax[tpu] and jax_refvos, and WORKDIR on storage all hosts mount (Filestore/NFS, or a
# gcsfuse mount). jax.distributed.initialize() finds the slice's hosts itself (refvos train
# detects a multi-host slice from TPU_WORKER_HOSTNAMES). Preemption sends SIGTERM: the run
# saves and exits; run this script again to resume.
set -euo pipefail
TPU="${1:?usage: launch/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR}"
ZONE="${2:?usage: launch/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR}"
CONFIG="${3:?usage: launch/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR}"
WORKDIR="${4:?usage: launch/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR}"
REPO_DIR="${REPO_DIR:-~/jax_refvos}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR &&
  export JAX_COMPILATION_CACHE_DIR=\$HOME/.cache/jax_refvos/xla &&
  .venv/bin/refvos train --config '$CONFIG' --workdir '$WORKDIR' 2>&1 | tee -a \$HOME/refvos_train.log
"
