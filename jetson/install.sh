#!/usr/bin/env bash
# The CUDA builds insan-edge needs on a Jetson Orin with JetPack 6, then a check of each.
#
# NOT YET RUN ON A BOARD (no Jetson was available where this was written): the steps follow
# NVIDIA's and the projects' documented procedures (jetson/README.md cites them), and the
# checks were run here only against recorded outputs (--dry-run --fixtures).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: jetson/install.sh [OPTIONS]

On a Jetson Orin with JetPack 6 (L4T R36), into the venv scripts/install.sh made:
  torch             JetPack's CUDA wheel from the Jetson AI Lab index ($JETSON_INDEX)
  onnxruntime-gpu   the JetPack build from the same index, replacing PyPI's onnxruntime
  llama-cpp-python  rebuilt from source with GGML_CUDA=on for sm_87, bypassing pip's cache
  bitsandbytes      built from source with CUDA for sm_87 (PyPI's aarch64 wheels fail on Orin)
then checks each: imports, a CUDA tensor, nf4 on CUDA, every llama.cpp layer on the GPU, an
onnxruntime CUDA session for the topic model. A step whose check already passes is skipped, so
running it again changes nothing. Refuses on anything but a Jetson on JetPack 6.

Options:
  --venv DIR        the venv (default: /opt/insan-edge/venv)
  --model GGUF      the model the llama.cpp check loads (default: the embedded one, from the
                    state dir /var/lib/insan-edge/models)
  --dry-run         print what would be installed and run the checks, install nothing
  --fixtures DIR    with --dry-run: read recorded outputs from DIR instead of probing
                    (tests/data/jetson/install/*)
  -h, --help        show this help

Environment:
  JETSON_INDEX      pip index for JetPack 6 wheels (default https://pypi.jetson-ai-lab.io/jp6/cu126)
  TORCH_SPEC        what to install from it (default: torch)
  ORT_SPEC          (default: onnxruntime-gpu)
  LLAMA_SPEC        (default: the version pyproject.toml pins, llama-cpp-python==0.3.36)
  BNB_REF           bitsandbytes git tag to build (default: 0.46.1)
  BNB_SRC           a bitsandbytes source checkout to build instead of cloning (offline boxes)
  BUILD_JOBS        parallel compile jobs (default 4: more runs an 8 GB Orin Nano out of memory)
EOF
}

say() { printf '==> %s\n' "$*"; }
die() { printf 'jetson/install.sh: error: %s\n' "$*" >&2; exit 1; }

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=/opt/insan-edge/venv
MODEL=""
DRY=0
FIXTURES=""
JETSON_INDEX="${JETSON_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}"
TORCH_SPEC="${TORCH_SPEC:-torch}"
ORT_SPEC="${ORT_SPEC:-onnxruntime-gpu}"
LLAMA_SPEC="${LLAMA_SPEC:-llama-cpp-python==0.3.36}"
BNB_REF="${BNB_REF:-0.46.1}"
BNB_SRC="${BNB_SRC:-}"
BUILD_JOBS="${BUILD_JOBS:-4}"

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV="$2"; shift 2 ;;
        --model) [ $# -ge 2 ] || die "--model needs a file"; MODEL="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --fixtures) [ $# -ge 2 ] || die "--fixtures needs a directory"; FIXTURES="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'jetson/install.sh: unknown option: %s (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done
[ -z "$FIXTURES" ] || [ "$DRY" -eq 1 ] || die "--fixtures goes with --dry-run"
[ -z "$FIXTURES" ] || [ -d "$FIXTURES" ] || die "no fixtures directory $FIXTURES"

# The checks are stdlib Python from this checkout: they run before and after the venv changes.
PY_HOST="$(command -v python3 || true)"
[ -n "$PY_HOST" ] || die "python3 is missing"
check() { PYTHONPATH="$REPO_DIR" "$PY_HOST" -m insan_edge.boardcheck "$@"; }
FIX_ARGS=()
[ -z "$FIXTURES" ] || FIX_ARGS=(--fixtures "$FIXTURES")

# --- 0. JetPack 6 or nothing ---------------------------------------------------------------------
check --board-only ${FIX_ARGS[@]+"${FIX_ARGS[@]}"} || exit 3

VPY="$VENV/bin/python"
if [ -z "$FIXTURES" ]; then
    [ -x "$VPY" ] || die "no venv at $VENV: run scripts/install.sh first (it builds the CPU venv this replaces parts of)"
    [ "$DRY" -eq 1 ] || [ "$(id -u)" -eq 0 ] || die "must be run as root (the venv under /opt belongs to root)"
    if [ -z "$MODEL" ]; then
        MODEL="$(ls /var/lib/insan-edge/models/*.gguf 2>/dev/null | head -n 1 || true)"
    fi
fi
PROBE_ARGS=(--python "$VPY" ${FIX_ARGS[@]+"${FIX_ARGS[@]}"})
[ -z "$MODEL" ] || PROBE_ARGS+=(--model "$MODEL")

# --- 1. What is still to do ----------------------------------------------------------------------
say "Checking what the venv already has"
mapfile -t NEEDED < <(check --needed "${PROBE_ARGS[@]}")
if [ "${#NEEDED[@]}" -eq 0 ]; then
    say "Every CUDA build is in place: nothing to install"
fi

run() {
    printf '    $ %s\n' "$*"
    [ "$DRY" -eq 1 ] || "$@"
}
PIP=("$VPY" -m pip install --progress-bar off)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" CUDACXX="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
export PATH="$CUDA_HOME/bin:$PATH"

for step in ${NEEDED[@]+"${NEEDED[@]}"}; do
    case "$step" in
        torch)
            say "torch: JetPack 6's CUDA wheel from $JETSON_INDEX"
            run "${PIP[@]}" --index-url "$JETSON_INDEX" --force-reinstall --no-deps "$TORCH_SPEC"
            ;;
        onnxruntime-gpu)
            say "onnxruntime-gpu: the JetPack build replaces PyPI's CPU onnxruntime"
            run "$VPY" -m pip uninstall -y onnxruntime
            run "${PIP[@]}" --index-url "$JETSON_INDEX" --force-reinstall --no-deps "$ORT_SPEC"
            ;;
        llama-cpp-python)
            # pip caches the CPU wheel it built by the sdist, not by CMAKE_ARGS: without
            # --no-cache-dir a "CUDA" install reuses the CPU build (jetson/README.md).
            say "llama-cpp-python: compiling llama.cpp with CUDA for sm_87 (~30 min on an Orin Nano)"
            run env CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87" FORCE_CMAKE=1 \
                CMAKE_BUILD_PARALLEL_LEVEL="$BUILD_JOBS" "${PIP[@]}" --no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-python "$LLAMA_SPEC"
            ;;
        bitsandbytes)
            say "bitsandbytes $BNB_REF: building with CUDA for sm_87"
            src="$BNB_SRC"
            tmp=""
            if [ -z "$src" ]; then
                if [ "$DRY" -eq 1 ]; then tmp="${TMPDIR:-/tmp}/bnb.XXXXXX"; else tmp="$(mktemp -d "${TMPDIR:-/tmp}/bnb.XXXXXX")"; fi
                src="$tmp/bitsandbytes"
                run git clone --depth 1 --branch "$BNB_REF" https://github.com/bitsandbytes-foundation/bitsandbytes.git "$src"
            fi
            # The CMake build writes the CUDA library into the source tree, where pip picks it up.
            run cmake -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY=87 -S "$src" -B "$src/build"
            run cmake --build "$src/build" -j "$BUILD_JOBS"
            run "${PIP[@]}" --no-deps --force-reinstall --no-build-isolation "$src"
            [ "$DRY" -eq 1 ] || [ -z "$tmp" ] || rm -rf -- "$tmp"
            ;;
        *) die "unknown step $step" ;;
    esac
done

# --- 2. The report -------------------------------------------------------------------------------
if [ "$DRY" -eq 1 ] && [ "${#NEEDED[@]}" -gt 0 ]; then
    say "Dry run: nothing was installed; the checks below are of the venv as it is${FIXTURES:+ (as recorded in $FIXTURES)}"
fi
say "Checking each build"
if check "${PROBE_ARGS[@]}"; then
    say "Done: serving, training and the topic model can use the GPU (insan-edge doctor checks the rest)"
elif [ "$DRY" -eq 1 ]; then
    say "Dry run: the steps above are what a real run would do about the failures"
    exit 1
else
    die "some checks failed (above); the daemon still runs, on the CPU where a build is missing"
fi
