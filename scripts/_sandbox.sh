# Sourced by the scripts in this folder: make sure bubblewrap (bwrap), the code interpreter's sandbox, is on this
# machine. It is a system package, not a Python one, so this is the one thing the scripts install outside .venv:
# Debian's `bubblewrap`, with apt-get, as root or with passwordless sudo, and only after saying so (what, why, and
# how to skip it) on stderr; on a terminal there are a few seconds to stop it with Ctrl-C.
# RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1 skips it. Without bubblewrap the bridge refuses the code_interpreter tool
# (it never runs code unsandboxed) and everything else works. `responses-bridge doctor` tells whether code can run.
# Its messages name the command by SANDBOX_FOR when the caller sets it (`bench code`), else by the script's name.
if ! command -v bwrap >/dev/null 2>&1; then
  _me="${SANDBOX_FOR:-${0##*/}}"
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

# The desktop (OpenAI's computer use: src/responses_bridge/sandbox/desktop/) runs in the same sandbox: a virtual
# display, a browser, input and fonts, from Debian's packages, installed the same way (said first on stderr, apt-get,
# as root or with passwordless sudo). RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL=1 skips them (and so does
# RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1: no desktop runs without the sandbox); without them a desktop is refused,
# naming the package, and everything else works. `responses-bridge doctor` tells whether a desktop can run.
_desktop_missing() {  # the Debian packages whose program is not here, as sandbox/desktop/requirements.py looks
  local missing=""
  command -v Xvfb >/dev/null 2>&1 || missing="$missing xvfb"
  command -v xdotool >/dev/null 2>&1 || missing="$missing xdotool"
  [ -x /usr/lib/chromium/chromium ] || missing="$missing chromium"
  [ -d /usr/share/fonts/truetype/dejavu ] || missing="$missing fonts-dejavu-core"
  echo "${missing# }"
}
_desktop="$(_desktop_missing)"
if [ -n "$_desktop" ]; then
  _me="${SANDBOX_FOR:-${0##*/}}"
  _why="the desktop's packages are not installed ($_desktop): a virtual display, a browser and its input, run in the
  code interpreter's sandbox for computer use; without them a desktop is refused, and everything else works."
  _as_root=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    _as_root="sudo -n"
  fi
  if [ "${RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL:-}" = 1 ] || [ "${RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL:-}" = 1 ]; then
    echo "$_me: $_why
  Not installing them (RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL=1). To have them: apt-get install $_desktop" >&2
  elif ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] && [ -z "$_as_root" ]; }; then
    echo "$_me: $_why
  Install them with your system's package manager (Debian/Ubuntu: sudo apt-get install $_desktop)." >&2
  else
    echo "$_me: $_why
  Installing them now: ${_as_root:+$_as_root }apt-get install -y $_desktop (system packages, outside .venv; an
  apt-get update first if the package list does not have them).
  To skip this: RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL=1 $_me" >&2
    if [ -t 0 ] && [ -t 2 ]; then
      echo "  (Ctrl-C within 5 seconds to stop here.)" >&2
      sleep 5
    fi
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $_as_root apt-get install -y -qq $_desktop >/dev/null \
      || { $_as_root apt-get update -qq >/dev/null \
           && DEBIAN_FRONTEND=noninteractive $_as_root apt-get install -y -qq $_desktop >/dev/null; } \
      || true
    _desktop="$(_desktop_missing)"
    if [ -z "$_desktop" ]; then
      echo "$_me: installed the desktop's packages." >&2
    else
      echo "$_me: could not install $_desktop: a desktop will be refused." >&2
    fi
  fi
  unset _me _why _as_root
fi
unset _desktop

# A root bridge runs each sandbox under an unprivileged host uid (RESPONSES_BRIDGE_CODE_SANDBOX_UID, 65534 by
# default), never as root; that uid must traverse the directories on the way to the Python runtime and .venv it
# binds into each call. A Python installed under /root (mode 0700: pyenv, or a root user's own build) is out of
# its reach, and the bridge then refuses code naming the directory. The host's directories are never loosened for
# it: the script goes on in a mount namespace of its own (unshare --mount, private: none of its mounts reaches the
# host), where each such directory is covered by a small tmpfs of the same owner and mode plus o+x (others may
# pass through, not list), holding the directory's entries bound back as they are (a file written directly in it
# meanwhile stays in the tmpfs and goes with the namespace). Only this script and what it starts see the change.
# Where no such namespace can be made, it says what to run and stops.
# RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1 skips this too (code is then refused, everything else works).
_blocked_dirs() {  # the first directory the sandbox's uid cannot traverse on each path it binds, one a line
  "$VENV/bin/python" - <<'EOF_PY' 2>/dev/null || true
import os
from responses_bridge.config.settings import load_settings
from responses_bridge.sandbox.command import LAUNCHER_SOURCE, python_binds
from responses_bridge.sandbox.identity import SandboxIdentity

settings = load_settings()
identity = SandboxIdentity.for_process(settings.code_sandbox_uid, settings.code_sandbox_gid)
seen = set()
for source in [*(host for host, _ in python_binds()), str(LAUNCHER_SOURCE)]:
    blocked = identity.unreachable(source)
    if blocked is not None and os.path.isdir(blocked) and blocked not in seen:
        seen.add(blocked)
        print(blocked)
EOF_PY
}

_cover_traversable() {  # in the private namespace: $1 covered by a tmpfs like it but o+x, its entries bound back
  local dir="$1" stage entry name mode owner
  mode="$(printf '%o' $(( 0$(stat -c %a "$dir") | 1 )))"
  owner="uid=$(stat -c %u "$dir"),gid=$(stat -c %g "$dir")"
  if [ "$dir" = "${ROOT:-}" ]; then
    # the checkout itself (a clone in a mode-0700 folder, as mktemp -d makes): what its tools write at its top would
    # land in the 1 MiB tmpfs and fill it (mypy's cache: an internal error, the checks failed; setuptools' build/ of a
    # wheel built from the checkout: ENOSPC) — made here first,
    # they are bound back like every other entry and what is written in them stays on disk
    (cd "$ROOT" && mkdir -p .mypy_cache .pytest_cache .ruff_cache .hypothesis build)
  fi
  stage="$(mktemp -d)"
  mount --rbind "$dir" "$stage"
  mount -t tmpfs -o "mode=$mode,$owner,size=1m" responses-bridge-traversable "$dir"
  for entry in "$stage"/* "$stage"/.[!.]* "$stage"/..?*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name="$dir/${entry##*/}"
    if [ -L "$entry" ]; then
      cp -P "$entry" "$name"
    elif [ -d "$entry" ]; then
      mkdir "$name" && mount --rbind "$entry" "$name"
    else
      : > "$name" && mount --bind "$entry" "$name"
    fi
  done
  umount -l "$stage" && rmdir "$stage"
}

if [ "$(id -u)" = 0 ] && [ "${RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL:-}" != 1 ] && command -v bwrap >/dev/null 2>&1 \
    && [ -x "${VENV:-}/bin/python" ]; then
  _me="${SANDBOX_FOR:-${0##*/}}"
  _blocked="$(_blocked_dirs)"
  if [ -n "$_blocked" ] && [ "${RB_SCRIPTS_MOUNT_NS:-}" != 1 ] \
      && unshare --mount --propagation private true >/dev/null 2>&1; then
    echo "$_me: the sandbox's uid cannot traverse $(echo $_blocked | tr '\n' ' ')on the way to the Python" \
         "runtime it binds into each call: going on in a private mount namespace where it can (the host's" \
         "directories are left as they are)" >&2
    RB_SCRIPTS_MOUNT_NS=1 exec unshare --mount --propagation private -- "$0" "$@"
  fi
  _rounds=0
  while [ -n "$_blocked" ] && [ "${RB_SCRIPTS_MOUNT_NS:-}" = 1 ] && [ "$_rounds" -lt 8 ]; do
    while IFS= read -r _dir; do _cover_traversable "$_dir"; done <<< "$_blocked"
    _blocked="$(_blocked_dirs)"
    _rounds=$((_rounds + 1))
  done
  if [ -n "$_blocked" ]; then
    echo "$_me: the sandbox's uid cannot traverse $(echo $_blocked | tr '\n' ' ')on the way to the Python" \
         "runtime it binds into each call, and no private mount namespace could be made to reach it without" \
         "loosening the host's directories. Run it with a Python that uid can read (e.g. a venv made from" \
         "/usr/bin/python3: RESPONSES_BRIDGE_VENV=/opt/rb-venv PYTHON=/usr/bin/python3 $_me), or set" \
         "RESPONSES_BRIDGE_CODE_SANDBOX_UID to a uid that can read it (never 0), or make the directories" \
         "traversable yourself (chmod o+x), or go on without code: RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL=1" \
         "$_me" >&2
    exit 1
  fi
  unset _blocked _rounds _dir _me
fi
