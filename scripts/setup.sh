#!/usr/bin/env bash
# Creates .venv and installs everything idemsweep needs (idempotent; fast when done).
#   - torch==2.13.0 first: the CPU build on local disk (any other torch pulls a CUDA build)
#   - the project with its dev extra
#   - Debian packages: graphviz (idem graph); with --test also postgresql and chromium
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

apt_pkgs=()
command -v dot >/dev/null 2>&1 || apt_pkgs+=(graphviz)
if ((want_test)); then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_pkgs+=(postgresql)
  command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
fi
if ((${#apt_pkgs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${apt_pkgs[*]}" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.idemsweep-installed
hash=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && "$(cat $stamp)" == "$hash" ]]; then
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
echo "setup: installing Python packages into .venv (first time takes a few minutes)"
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v -e "^WARNING: Location" -e "^ *!!" -e WheelFile || true
.venv/bin/python -c "import torch, ray, fastapi, sqlalchemy, idemcore" \
  || { echo "setup: install failed" >&2; exit 1; }
echo "$hash" > $stamp
