#!/usr/bin/env bash
# Installs what the build and the tests need and is missing.
#   scripts/install-deps.sh            OS packages (Debian/Ubuntu names) for the build
#   scripts/install-deps.sh --python   also the Python test references into build/pyenv
# Idempotent and quiet when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config libopenblas-openmp-dev libsentencepiece-dev nlohmann-json3-dev doctest-dev
          libpcre2-dev openmpi-bin libopenmpi-dev python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--python" ]]; then
  venv=build/pyenv
  stamp=$venv/.requirements
  if [[ ! -x $venv/bin/python ]]; then
    echo "install-deps: creating $venv"
    mkdir -p build
    python3 -m venv "$venv"
  fi
  if ! cmp -s tests/requirements.txt "$stamp"; then
    echo "install-deps: installing the Python test references into $venv (torch, transformers, ...)"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt "$stamp"
  fi
fi
