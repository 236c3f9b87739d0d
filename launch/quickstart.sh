#!/usr/bin/env bash
# The main job on the built-in synthetic benchmark: creates .venv, installs jax_refvos, generates
# the benchmark into data/synth (skipped when already there), converts its splits to ArrayRecord
# shards in data/records (finished conversions are skipped), writes the union-of-all-objects
# baseline for valid_u and scores it with the official-identical J&F scorer.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/_venv.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
out=runs/quickstart
refvos synth --out_dir data/synth
for split in train valid_u; do
  refvos convert --dataset synth --root data/synth --split "$split" \
    --out_dir "data/records/synth_$split"
done
refvos baseline --dataset_root data/synth --split valid_u --kind union \
  --pred_dir "$out/union/valid_u" --overwrite
refvos score --dataset_root data/synth --split valid_u --pred_dir "$out/union/valid_u" \
  --out "$out/union/valid_u_metrics.json"
echo "metrics: $out/union/valid_u_metrics.json"
