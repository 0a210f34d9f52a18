# The test passes of scripts/test. Every pass runs even when an earlier one failed, each ends with one closing line,
# and `finish_passes` repeats those lines and exits non-zero when any pass failed: a failure on SQLite must not hide
# what PostgreSQL would have said. pytest's exit 5 (it selected no test, e.g. `-k` matched none in that pass) is not
# a failure of the pass; its line says so. Sourced (not run) so tests can drive it with a stand-in `python`.
passes=()
failed_passes=()
run_pass() {
  local name=$1; shift
  local status=0
  python -m pytest "$@" || status=$?
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
