#!/usr/bin/env bash
# Installs everything the tests need and runs every test: library, notebooks (strict nbval),
# the real-browser dashboard test, and each benchmark in its short mode.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO="sudo"; fi
# Debian's chromium (for the browser test and kaleido's static charts) and one font family,
# nothing recommended beyond that (a plain install pulls ~115 packages, cups and avahi among them).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    chromium fonts-dejavu-core
fi

python -m pip install --upgrade pip
python -m pip install -e ".[test,browser,dask]"

# The real coding-agent CLIs, at the versions the tests were written against, in a cache
# folder outside the repository (tests/agent_servers.py finds them there; they talk only to
# scripted model servers on 127.0.0.1).
export CODEXFLOW_AGENTS_CACHE="${CODEXFLOW_AGENTS_CACHE:-$HOME/.cache/codexflow-agents}"
if ! "$CODEXFLOW_AGENTS_CACHE/node_modules/.bin/codex" --version 2>/dev/null | grep -q 0.169.0 ||
   ! "$CODEXFLOW_AGENTS_CACHE/node_modules/.bin/claude" --version 2>/dev/null | grep -q 2.1.197; then
  mkdir -p "$CODEXFLOW_AGENTS_CACHE"
  npm install --prefix "$CODEXFLOW_AGENTS_CACHE" --no-audit --no-fund --loglevel=error \
    @openai/codex@0.169.0 @anthropic-ai/claude-code@2.1.197
fi
export CODEXFLOW_REQUIRE_AGENT_CLIS=1  # a missing CLI fails the agent tests instead of skipping

python -m ruff check codexflow_nb tests bench scripts notebooks
python -m pytest -q -p no:cacheprovider tests
python -m pytest -q -p no:cacheprovider --nbval notebooks/ --nbval-sanitize-with notebooks/sanitize.cfg
for bench in bench/[!_]*.py; do  # bench/_*.py are shared helpers, not benchmarks
  echo "== $bench --short"
  python "$bench" --short
done
