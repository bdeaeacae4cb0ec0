#!/usr/bin/env bash
# Installs everything the tests need and runs every test: library, notebooks (strict nbval),
# the real-browser dashboard test, and each benchmark in its short mode.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

python -m pip install --upgrade pip
python -m pip install -e ".[test,browser,dask]"

python -m ruff check codexflow_nb tests bench scripts notebooks
python -m pytest -q -p no:cacheprovider tests
python -m pytest -q -p no:cacheprovider --nbval notebooks/ --nbval-sanitize-with notebooks/sanitize.cfg
for bench in bench/*.py; do
  echo "== $bench --short"
  python "$bench" --short
done
