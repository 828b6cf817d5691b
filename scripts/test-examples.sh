#!/usr/bin/env bash
# The C ABI test suite (tests/c/run.sh) and the language examples (examples/run.sh), as
# scripts/test.sh calls them. Exits non-zero if either fails.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rc=0
bash "$root/tests/c/run.sh" || rc=1
bash "$root/examples/run.sh" || rc=1
exit $rc
