#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (run as root or with sudo available):
# Debian packages for headless napari, the CPU build of PyTorch, then the project.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

if command -v apt-get >/dev/null; then
  echo "install.sh: Debian packages for headless napari (Xvfb, Mesa, Qt's xcb libraries), poppler, dicom3tools (dciodvfy)"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libdbus-1-3 libfontconfig1 \
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
    poppler-utils dicom3tools >/dev/null
fi

echo "install.sh: CPU build of PyTorch first (an unpinned torch would pull CUDA packages)"
python3 -m pip install -q torch==2.13.0
echo "install.sh: plexus-planner with its test extras"
python3 -m pip install -q -e ".[test]"
