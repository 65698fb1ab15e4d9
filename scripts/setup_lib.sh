# shellcheck shell=bash
# Shared by the environment set-up scripts (sourced, not run): one line per stage.
#
#   stage LABEL COMMAND...
#
# prints "[PREFIX] LABEL ... done (N s)" and keeps the command's output in a log. On success
# only the log's ERROR lines are shown (pip reports some problems, e.g. dependency conflicts,
# and still exits 0); on failure the whole log, less the "WARNING: Location 'file:///...' is
# ignored" lines that a local package index without some package causes (one per package and
# index, nothing to act on). Set STAGE_PREFIX before calling (default: setup).

_STAGE_NOISE="^WARNING: Location '.*' is ignored"

stage() {
  local label="$1"
  shift
  local log t0 rc=0
  log="$(mktemp)"
  t0=$(date +%s)
  printf '[%s] %s ... ' "${STAGE_PREFIX:-setup}" "$label"
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "failed (exit $rc):"
    grep -v -e "$_STAGE_NOISE" "$log" >&2 || true
    rm -f "$log"
    exit "$rc"
  fi
  echo "done ($(($(date +%s) - t0)) s)"
  grep -e '^ERROR' "$log" >&2 || true
  rm -f "$log"
}
