# Sourced by the scripts in this folder: make sure bubblewrap (bwrap), the code interpreter's sandbox, is on this
# machine. It is a system package, not a Python one, so this is the one thing the scripts install outside .venv:
# Debian's `bubblewrap`, with apt-get, as root or with passwordless sudo, and only after saying so (what, why, and
# how to skip it) on stderr; on a terminal there are a few seconds to stop it with Ctrl-C.
# RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1 skips it. Without bubblewrap the bridge refuses the code_interpreter tool
# (it never runs code unsandboxed) and everything else works. `responses-bridge doctor` tells whether code can run.
if ! command -v bwrap >/dev/null 2>&1; then
  _me="${0##*/}"
  _why="bubblewrap (bwrap) is not installed: it is the code interpreter's sandbox; without it the bridge refuses
  the code_interpreter tool (it never runs code unsandboxed), and everything else works."
  _as_root=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    _as_root="sudo -n"
  fi
  if [ "${RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL:-}" = 1 ]; then
    echo "$_me: $_why
  Not installing it (RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1). To have it: apt-get install bubblewrap" >&2
  elif ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] && [ -z "$_as_root" ]; }; then
    echo "$_me: $_why
  Install it with your system's package manager (Debian/Ubuntu: sudo apt-get install bubblewrap)." >&2
  else
    echo "$_me: $_why
  Installing it now: ${_as_root:+$_as_root }apt-get install -y bubblewrap (a system package, outside .venv; an
  apt-get update first if the package list does not have it).
  To skip this: RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1 $_me" >&2
    if [ -t 0 ] && [ -t 2 ]; then
      echo "  (Ctrl-C within 5 seconds to stop here.)" >&2
      sleep 5
    fi
    $_as_root apt-get install -y -qq bubblewrap >/dev/null \
      || { $_as_root apt-get update -qq >/dev/null && $_as_root apt-get install -y -qq bubblewrap >/dev/null; } \
      || true
    if command -v bwrap >/dev/null 2>&1; then
      echo "$_me: installed bubblewrap ($(command -v bwrap))." >&2
    else
      echo "$_me: could not install bubblewrap: the code_interpreter tool will be refused." >&2
    fi
  fi
  unset _me _why _as_root
fi

# A root bridge runs each sandbox under an unprivileged host uid (RESPONSES_BRIDGE_CODE_SANDBOX_UID, 65534 by
# default), never as root; that uid must traverse the directories on the way to the Python runtime and .venv it
# binds into each call. A Python installed under /root (mode 0700: pyenv, or a root user's own build) is out of
# its reach, and the bridge then refuses code naming the directory. Here, as root, those directories are made
# traversable (o+x: others may pass through, not list), said first on stderr; RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1
# skips this too.
if [ "$(id -u)" = 0 ] && [ "${RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL:-}" != 1 ] && command -v bwrap >/dev/null 2>&1 \
    && [ -x "${VENV:-}/bin/python" ]; then
  _blocked="$("$VENV/bin/python" - <<'EOF_PY' 2>/dev/null || true
import os
from responses_bridge.config import load_settings
from responses_bridge.sandbox.command import LAUNCHER_SOURCE, python_binds
from responses_bridge.sandbox.identity import SandboxIdentity

settings = load_settings()
identity = SandboxIdentity.for_process(settings.code_sandbox_uid, settings.code_sandbox_gid)
for source in [*(host for host, _ in python_binds()), str(LAUNCHER_SOURCE)]:
    while (blocked := identity.unreachable(source)) is not None and os.path.isdir(blocked):
        print(blocked)
        os.chmod(blocked, os.stat(blocked).st_mode | 0o001)
EOF_PY
)"
  if [ -n "$_blocked" ]; then
    echo "${0##*/}: the sandbox's uid could not reach the Python runtime it binds into each call; made traversable" \
         "for others (chmod o+x, no listing): $(echo $_blocked | tr '\n' ' ')" >&2
  fi
  unset _blocked
fi
