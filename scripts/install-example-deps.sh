#!/usr/bin/env bash
# Installs the toolchains the example tests (examples/run.sh) and tests/c/run.sh use, when
# missing: Go (cgo), Mono's C# compiler and runtime, valgrind, pkg-config and a C/C++
# compiler. Debian/Ubuntu (apt-get); needs root. There is no Swift toolchain in Debian:
# examples/swift is checked only where `swift` exists.
set -euo pipefail
need=()
command -v go >/dev/null || need+=(golang-go)
command -v mcs >/dev/null || need+=(mono-mcs)
command -v mono >/dev/null || need+=(mono-runtime)
command -v valgrind >/dev/null || need+=(valgrind)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
if [ ${#need[@]} -eq 0 ]; then
  echo "example toolchains already installed"
  exit 0
fi
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
echo "installed: ${need[*]}"
