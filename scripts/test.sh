#!/usr/bin/env bash
# Set up .venv/ with the development tools and run every check: ruff, mypy, pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-venv.sh" dev,train
cd "$root"
echo "==> ruff"
.venv/bin/ruff check insan_edge tests bench
.venv/bin/ruff format --check insan_edge tests bench
echo "==> mypy"
.venv/bin/mypy insan_edge
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
