#!/usr/bin/env bash
# The test command: sets up a private virtualenv and the real peer tools, then runs pytest.
# Usage: ./tests/run.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/tools/venv.sh
tools_bin=$(./tests/tools/install-system-deps.sh)
export PATH="$root/.venv/bin:$tools_bin:$PATH"
exec .venv/bin/python -m pytest "$@"
