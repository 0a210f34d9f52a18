# Sourced by the scripts in this folder: make sure .venv exists and holds this project, with the extras named
# in VENV_EXTRAS (e.g. "test"). Not an argument: a sourced file sees its caller's arguments as its own.
# Re-installs only when pyproject.toml changed, so a second run starts at once. With VENV_AS_IS=1 (scripts/test
# running named tests) a venv that already imports the project and pytest is used as it is, installed or not since
# pyproject.toml last changed (one line says when it was not); a missing one is installed as usual.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RESPONSES_BRIDGE_VENV:-$ROOT/.venv}"
EXTRAS="${VENV_EXTRAS:-}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] && [ "${VENV_AS_IS:-}" = 1 ] \
    && "$VENV/bin/python" -c "import pytest, responses_bridge" >/dev/null 2>&1; then
  echo "using $VENV as it is: pyproject.toml changed since its last install (scripts/test with no test named installs it)" >&2
elif [ ! -f "$stamp" ]; then
  echo "installing responses-bridge${EXTRAS:+[$EXTRAS]} into $VENV" >&2
  # VENV_NO_COMPILE=1 (scripts/test): pip leaves compiling to the first import, which writes what it compiles. pip
  # would compile every module of every package, one file at a time, before anything else can start: half of the
  # [test] install's CPU (27 -> 13 s) for modules no test imports. Not for the demo's venv: its code interpreter
  # imports from the venv read-only (python -B) and would compile a package such as numpy at each call.
  _compile=()
  if [ "${VENV_NO_COMPILE:-}" = 1 ]; then _compile=(--no-compile); fi
  _project=(-e "$ROOT${EXTRAS:+[$EXTRAS]}")
  _pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  _installed=0
  # uv installs the same set (the same resolution from the same index) in ~7 s where pip takes 18-30 (pip resolves,
  # unpacks and links one package after another: the first fifth of a fresh clone's `scripts/test`, one core busy).
  # uv reads none of pip's configuration, so it is used only where pip names no index of its own (pip.conf's or
  # PIP_INDEX_URL's index-url) and RESPONSES_BRIDGE_PIP is not 1; if it cannot install, pip does.
  if [ "${RESPONSES_BRIDGE_PIP:-}" != 1 ] && [ -z "${PIP_INDEX_URL:-}" ] \
      && ! "$VENV/bin/python" -m pip config list 2>/dev/null | grep -q '\.index-url='; then
    _uv_compile=()
    if [ "${VENV_NO_COMPILE:-}" != 1 ]; then _uv_compile=(--compile-bytecode); fi
    if "${_pip[@]}" --no-compile 'uv>=0.5' && "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" \
        "${_uv_compile[@]}" --upgrade pip "${_project[@]}"; then
      _installed=1
    else
      echo "uv could not install the project: installing it with pip" >&2
    fi
    unset _uv_compile
  fi
  if [ "$_installed" = 0 ]; then
    "${_pip[@]}" "${_compile[@]}" --upgrade pip
    "${_pip[@]}" "${_compile[@]}" "${_project[@]}"
  fi
  unset _compile _project _pip _installed
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
