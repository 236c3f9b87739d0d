#!/usr/bin/env bash
# The main job on the built-in synthetic benchmark, from a fresh machine:
#   install into .venv -> generate data/synth (skipped when there) -> convert train and valid_u to
#   ArrayRecord shards (finished conversions skipped) -> the union-of-all-objects baseline on
#   valid_u -> train the tiny VIRST into runs/quickstart (resumes when rerun) -> evaluate it on
#   valid_u -> print its J&F beside the baseline's -> one overlay video (runs/quickstart/overlay).
# QUICKSTART_STEPS (default 300) sets the training length.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/_venv.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
out=runs/quickstart
steps="${QUICKSTART_STEPS:-300}"
refvos synth --out_dir data/synth
for split in train valid_u; do
  refvos convert --dataset synth --root data/synth --split "$split" \
    --out_dir "data/records/synth_$split"
done
refvos baseline --dataset_root data/synth --split valid_u --kind union \
  --pred_dir "$out/union/valid_u" --overwrite
refvos score --dataset_root data/synth --split valid_u --pred_dir "$out/union/valid_u" \
  --out "$out/union/valid_u_metrics.json"
refvos train --config "configs/virst.py:variant=tiny,steps=$steps" --workdir "$out"
refvos evaluate --workdir "$out" --split valid_u --dataset_root data/synth --overwrite
python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/eval/valid_u/metrics.json"))
union = json.load(open(f"{out}/union/valid_u_metrics.json"))
print(f"\nsynthetic valid_u ({ours['num_expressions']} expressions)")
print(f"{'method':<28}{'J':>8}{'F':>8}{'J&F':>8}")
for name, m in (("union of all objects", union), ("tiny VIRST (ours)", ours)):
    print(f"{name:<28}{m['J']:8.1f}{m['F']:8.1f}{m['J&F']:8.1f}")
PY
# One overlay video: the first valid_u expression of the first video.
read -r vid text < <(python - <<'PY'
import json
meta = json.load(open("data/synth/valid_u/meta_expressions.json"))["videos"]
vid = sorted(meta)[0]
exp = meta[vid]["expressions"][sorted(meta[vid]["expressions"], key=int)[0]]
print(vid, exp["exp"])
PY
)
refvos predict --workdir "$out" --video "data/synth/valid_u/JPEGImages/$vid" --text "$text" \
  --out_dir "$out/overlay" --overwrite
echo "overlay: $(ls "$out"/overlay/overlay.* | head -1)  (\"$text\" on $vid)"
