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
export CODEXFLOW_REQUIRE_BROWSER=1  # so does a missing Chromium, JupyterLab or Playwright

# The package compiled once, up front, into its __pycache__ folders (git-ignored): where
# PYTHONDONTWRITEBYTECODE is set (as on our machines) no process writes them, so each of the
# hundreds of Python processes the tests start (codex-flow, servers, kernels) compiled the
# whole package from source again. The variable itself stays as it is: the tests and notebooks
# see the same environment (07-coding-agents' agents leave no __pycache__ in their worktrees).
python -m compileall -q -j 0 codexflow_nb tests bench scripts

# Each step says how long it took (the == lines), so a slow CI run shows where the time went.
step() {
  local started=$SECONDS
  "$@"
  echo "== $(( SECONDS - started )) s: $*"
}

step python -m ruff check codexflow_nb tests bench scripts notebooks
# pytest-xdist workers: one more than the cores (3 on CI's 2), since many tests spend their time
# waiting on the processes, servers and browsers they start. --dist loadgroup with the groups
# tests/conftest.py sets: each test file is one unit of work (its module fixtures are set up
# once) and the browser tests are one unit together (one JupyterLab and Chromium at a time);
# --no-loadscope-reorder keeps the collection order, so the longest units (the browser tests,
# tests/test_cleanup_locking.py) start first rather than last.
WORKERS="${CODEXFLOW_TEST_WORKERS:-$(( $(nproc) + 1 ))}"
step python -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadgroup --no-loadscope-reorder \
  tests
# each notebook in its own kernel, its cells in order on one worker
step python -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadfile \
  --nbval notebooks/ --nbval-sanitize-with notebooks/sanitize.cfg
for bench in bench/[!_]*.py; do  # bench/_*.py are shared helpers, not benchmarks
  echo "== $bench --short"
  step python "$bench" --short
done
