#!/usr/bin/env bash
# TPU training on GKE with xpk: a workload that runs `refvos train` on every host of the slice.
#
#   bash launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR
#   bash launch/train_xpk.sh my-cluster us-docker.pkg.dev/p/r/jax_refvos:latest v5p-256 \
#     "configs/virst.py:variant=7b,init=/mnt/shared/weights/virst,records=/mnt/shared/records/train,mesh=-1x16x1" /mnt/shared/runs/virst_7b
#
# IMAGE: a container with jax[tpu] and jax_refvos installed (`pip install .` in this repo).
# WORKDIR: a volume every pod mounts (e.g. a Filestore PVC or a gcsfuse CSI volume). xpk sets
# the TPU environment; jax.distributed.initialize() finds the hosts itself. Preempted pods are
# restarted by the JobSet with the same command, which resumes from the newest checkpoint.
set -euo pipefail
CLUSTER="${1:?usage: launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR}"
IMAGE="${2:?usage: launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR}"
TPU_TYPE="${3:?usage: launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR}"
CONFIG="${4:?usage: launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR}"
WORKDIR="${5:?usage: launch/train_xpk.sh CLUSTER IMAGE TPU_TYPE CONFIG WORKDIR}"
xpk workload create \
  --cluster "$CLUSTER" \
  --workload "refvos-$(date +%Y%m%d-%H%M%S)" \
  --docker-image "$IMAGE" \
  --tpu-type "$TPU_TYPE" \
  --num-slices 1 \
  --max-restarts 10 \
  --command "refvos train --config '$CONFIG' --workdir '$WORKDIR'"
