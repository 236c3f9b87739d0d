#!/usr/bin/env bash
# Runs the test suite: creates .venv, installs jax_refvos with the [test] and [parity] extras
# (the PyTorch references: CPU torch, sam2 1.1.0), runs pytest.
# Extra arguments go to pytest, e.g.  bash launch/test.sh -m slow   or   bash launch/test.sh -k rle
set -euo pipefail
cd "$(dirname "$0")/.."
REFVOS_EXTRAS="test,parity" source launch/_venv.sh
export JAX_PLATFORMS=cpu
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-m "not slow" -n 2)
set +e
python -m pytest "${args[@]}"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "error: pytest collected no tests; refusing to call that a pass" >&2
  exit 1
fi
exit $rc
