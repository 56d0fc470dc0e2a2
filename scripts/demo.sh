#!/usr/bin/env bash
# Set up .venv/ and run the daemon in the foreground with the embedded model and the demo family.
# State goes to .state/ in the repo; the API listens on .state/api.sock. Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-venv.sh" train
mkdir -p "$root/.state"
echo "==> starting insan-edge; in another terminal try:"
echo "    .venv/bin/insan-edge recommend --socket .state/api.sock --family smith --member emma"
exec "$root/.venv/bin/insan-edge" run \
    --config "$root/configs/family.example.yaml" \
    --state-dir "$root/.state" \
    --socket "$root/.state/api.sock" "$@"
