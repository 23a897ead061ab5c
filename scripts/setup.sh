#!/usr/bin/env bash
# Set up hiper-gym in ./.venv on a fresh Debian machine with Python >= 3.10.
#
#   ./scripts/setup.sh          system packages + .venv with the `train` extra (enough for `hiper-gym train`)
#   ./scripts/setup.sh --dev    everything, including Chromium and the test tools (`all` extra)
#
# Environment:
#   TORCH_SPEC        the torch requirement installed first (default: torch==2.13.0; on a GPU machine
#                     pass the build you want, e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index).
#   HIPER_GYM_WHEELS  where the built wheels of ALFWorld's two source-only dependencies are cached
#                     (default: ~/.cache/hiper-gym/wheels); building them takes ~2 minutes once.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

# System packages: a C++ toolchain for jericho and fast-downward-textworld (no wheels exist),
# and, for the browser tests, Debian's Chromium with its matching driver.
packages=(g++ make cmake)
[ "$dev" = 1 ] && packages+=(chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" != 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# fast-downward's build calls `python`, which only an activated venv provides on plain Debian.
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel

# torch first: a plain dependency on torch would pull the newest multi-GB CUDA build.
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"

wheels="${HIPER_GYM_WHEELS:-$HOME/.cache/hiper-gym/wheels}"
mkdir -p "$wheels"
if ! ls "$wheels"/jericho-3.3.1-*.whl "$wheels"/fast_downward_textworld-20.6.4-*.whl >/dev/null 2>&1; then
    echo "Building jericho and fast-downward-textworld wheels once into $wheels (about 2 minutes)..."
    python -m pip wheel -q --no-deps -w "$wheels" jericho==3.3.1 fast-downward-textworld==20.6.4
fi

extra="train"
[ "$dev" = 1 ] && extra="all"
python -m pip install -q --find-links "$wheels" -e ".[$extra]"
echo "hiper-gym is set up in .venv (extra: $extra)."
