# Sourced by the scripts in this folder: make sure bubblewrap (bwrap), the code interpreter's sandbox, is on this
# machine. Installed from the distribution's packages (Debian's bubblewrap) when missing, as root or with sudo;
# where it cannot be installed, one line says so and the bridge refuses the code_interpreter tool (it never runs
# code unsandboxed). `responses-bridge doctor` tells whether code can run here.
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    as_root=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then as_root="sudo -n"; fi
    if [ "$(id -u)" = 0 ] || [ -n "$as_root" ]; then
      echo "installing bubblewrap (the code interpreter's sandbox)" >&2
      $as_root apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
        || { $as_root apt-get update -qq >/dev/null 2>&1 && $as_root apt-get install -y -qq bubblewrap >/dev/null 2>&1; } \
        || echo "could not install bubblewrap: the code_interpreter tool will be refused" >&2
    fi
  fi
  command -v bwrap >/dev/null 2>&1 \
    || echo "bubblewrap (bwrap) is not installed: the code_interpreter tool will be refused (apt-get install bubblewrap)" >&2
fi
