# Shared helpers of tests/c/run.sh and examples/run.sh (sourced, not run).
#
# find_model NAME   prints the path of model NAME: $GHOSTCORE_MODELS_DIR, then models/, then
#                   ../shared/models/ beside the checkout. Empty if absent.
# step NAME CMD...  runs CMD, counts it passed or failed, shows its output on failure.
# skip NAME WHY     counts a skip; under CI=true a skip is a failure (CI installs every
#                   toolchain and model).
# summary LABEL     prints "LABEL: N passed, N failed, N skipped"; returns 1 on failure.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
n_pass=0
n_fail=0
n_skip=0
logdir="$(mktemp -d "${TMPDIR:-/tmp}/ghostcore-tests.XXXXXX")"
trap 'rm -rf "$logdir"' EXIT

in_ci() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; }

find_model() {
  local name="$1" d
  for d in "${GHOSTCORE_MODELS_DIR:-}" "$root/models" "$root/../shared/models"; do
    if [ -n "$d" ] && [ -f "$d/$name" ]; then
      echo "$d/$name"
      return 0
    fi
  done
  return 1
}

step() {
  local name="$1"
  shift
  local log="$logdir/step.log"
  if "$@" >"$log" 2>&1; then
    n_pass=$((n_pass + 1))
    echo "ok      $name"
  else
    n_fail=$((n_fail + 1))
    echo "FAILED  $name: $*"
    sed 's/^/    | /' "$log" | tail -n 40
  fi
}

skip() {
  if in_ci; then
    n_fail=$((n_fail + 1))
    echo "FAILED  $1: skipped under CI=true: $2"
  else
    n_skip=$((n_skip + 1))
    echo "SKIPPED $1: $2"
  fi
}

summary() {
  echo "$1: $n_pass passed, $n_fail failed, $n_skip skipped"
  [ "$n_fail" -eq 0 ]
}
