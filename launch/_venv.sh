# Sourced by the launch scripts: makes .venv (Python >= 3.11) and installs the project into it.
# Re-installs only when pyproject.toml or the requested extras change. Usage:
#   REFVOS_EXTRAS="test" source launch/_venv.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REFVOS_VENV:-$REPO/.venv}"
EXTRAS="${REFVOS_EXTRAS:-}"

pick_python() {
  for py in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "error: jax_refvos needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)"
  echo "[venv] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# The stamp records the pyproject.toml hash and the extras installed with it; a run that asks for
# a subset of those (quickstart after test.sh) installs nothing.
stamp="$VENV/.refvos-installed"
hash="$(sha256sum < "$REPO/pyproject.toml" | cut -c1-16)"
have_hash="" have_extras=""
[ -f "$stamp" ] && read -r have_hash have_extras < "$stamp" || true
need_install=0
[ "$have_hash" = "$hash" ] || { need_install=1; have_extras=""; }
for extra in ${EXTRAS//,/ }; do
  [[ ",$have_extras," == *",$extra,"* ]] || need_install=1
done
if [ "$need_install" = 1 ]; then
  EXTRAS="$(printf '%s\n' ${have_extras//,/ } ${EXTRAS//,/ } | sort -u | paste -sd, -)"
  spec="$REPO"
  [ -n "$EXTRAS" ] && spec="$REPO[$EXTRAS]"
  echo "[venv] installing jax_refvos${EXTRAS:+ [$EXTRAS]} into $VENV"
  pip_install() {
    local log="$VENV/.refvos-pip.log"
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
      grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
      echo "error: pip install $* failed (log: $log)" >&2
      exit 1
    fi
  }
  # sam2 (parity extra) builds from source; its CUDA extension is optional and unwanted here.
  export SAM2_BUILD_CUDA=0
  pip_install -e "$spec"
  if [[ ",$EXTRAS," == *",test,"* ]]; then
    # The DAVIS metric code on PyPI, the independent reference of our scorer's tests. --no-deps:
    # it requires the GUI `opencv-python`; the headless cv2 from the [test] extra serves it.
    pip_install --no-deps "vos-benchmark==0.1.0"
  fi
  echo "$hash $EXTRAS" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
