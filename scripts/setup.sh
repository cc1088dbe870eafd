#!/usr/bin/env bash
# Installs what building and testing fjord needs on a fresh Debian machine
# with Rust: libclang for RocksDB's bindings, kcat, and a Python venv with
# the Kafka client libraries the real-client tests drive. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
dpkg -s libclang1-14 >/dev/null 2>&1 || need_apt+=(libclang1-14)
dpkg -s libclang-common-14-dev >/dev/null 2>&1 || need_apt+=(libclang-common-14-dev)
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
