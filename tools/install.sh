#!/usr/bin/env bash
# Installs vkinfer and what it needs on a fresh Debian/Ubuntu-like machine:
#   - the Python package (editable) with its test extra, from PyPI;
#   - glslc (compiles shaders not shipped precompiled) when missing and apt-get is usable;
#   - lavapipe (mesa-vulkan-drivers, a CPU Vulkan driver) when no Vulkan device is visible and
#     apt-get is usable; otherwise it says what to install.
# Usage: bash tools/install.sh        (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

can_apt() { command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; }
apt_install() {
  local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

echo "vkinfer install: Python packages" >&2
$PY -m pip install -q -e ".[test]" >&2

# The vulkan Python package needs the loader (libvulkan1) just to import.
has_device() {
  $PY - <<'PY' 2>/dev/null
import sys
try:
    from vkinfer.vk.instance import list_devices
    sys.exit(0 if list_devices() else 1)
except Exception:
    sys.exit(1)
PY
}

if ! has_device; then
  if can_apt; then
    echo "vkinfer install: no Vulkan device visible; installing lavapipe (mesa-vulkan-drivers," \
         "a CPU Vulkan driver) and the Vulkan loader" >&2
    apt_install mesa-vulkan-drivers libvulkan1
  else
    echo "vkinfer install: no Vulkan device is visible and apt-get is not usable here." >&2
    echo "  Install your GPU's Vulkan driver and the Vulkan loader (libvulkan1), or for a CPU" >&2
    echo "  fallback the Mesa lavapipe driver (package mesa-vulkan-drivers)." >&2
    exit 1
  fi
  has_device || { echo "vkinfer install: still no Vulkan device after installing lavapipe" >&2; exit 1; }
fi

if ! command -v glslc >/dev/null 2>&1; then
  if can_apt; then
    echo "vkinfer install: installing glslc (shader compiler)" >&2
    apt_install glslc
  else
    echo "vkinfer install: glslc not found; shaders without shipped SPIR-V cannot compile." \
         "Install the 'glslc' package (shaderc)." >&2
  fi
fi
echo "vkinfer install: done" >&2
