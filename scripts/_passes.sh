# The test passes of scripts/test. Every pass runs even when an earlier one failed, each ends with one closing line,
# and `finish_passes` repeats those lines and exits non-zero when any pass failed: a failure on SQLite must not hide
# what PostgreSQL would have said. pytest's exit 5 (it selected no test, e.g. `-k` matched none in that pass) is not
# a failure of the pass; its line says so. Sourced (not run) so tests can drive it with a stand-in `python`.
# A pass may also run beside the others (start_pass, then join_pass): its output goes to a file, printed when it is
# joined so that it never interleaves with the pass running meanwhile, and its line joins the summary like any other;
# stop_started_passes ends those not joined yet (their process group: pytest and whatever it started).
passes=()
failed_passes=()
declare -A _started_pid=() _started_out=()
run_pass() {
  local name=$1; shift
  local status=0
  python -m pytest "$@" || status=$?
  _ended "$name" "$status"
}
start_pass() {
  local name=$1; shift
  _started_out[$name]=$(mktemp)
  set -m  # a process group of its own, so stop_started_passes reaches what it started
  ( python -m pytest "$@" ) </dev/null >"${_started_out[$name]}" 2>&1 &
  _started_pid[$name]=$!
  set +m
}
join_pass() {
  local name=$1 status=0
  wait "${_started_pid[$name]}" || status=$?
  cat "${_started_out[$name]}"
  rm -f "${_started_out[$name]}"
  unset "_started_pid[$name]" "_started_out[$name]"
  _ended "$name" "$status"
}
stop_started_passes() {
  local name
  for name in "${!_started_pid[@]}"; do
    kill -TERM -- "-${_started_pid[$name]}" 2>/dev/null || true
    wait "${_started_pid[$name]}" 2>/dev/null || true
    rm -f "${_started_out[$name]}"
  done
  _started_pid=(); _started_out=()
}
_ended() {
  local name=$1 status=$2
  if [ "$status" -eq 0 ]; then
    passes+=("scripts/test: $name pass: passed")
  elif [ "$status" -eq 5 ]; then
    passes+=("scripts/test: $name pass: no tests selected")
  else
    passes+=("scripts/test: $name pass: FAILED (pytest exit $status)")
    failed_passes+=("$name")
  fi
  echo "${passes[-1]}" >&2
}
finish_passes() {
  printf '%s\n' "${passes[@]}" >&2
  if [ ${#failed_passes[@]} -gt 0 ]; then
    echo "scripts/test: failed: ${failed_passes[*]}" >&2
    exit 1
  fi
}
