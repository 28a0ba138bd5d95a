#!/usr/bin/env bash
# Debian packages daceml needs beyond Python, a C++ compiler and CMake.
# Installs them with apt-get when run as root; otherwise says what to install.
set -euo pipefail
PACKAGES=()  # none today: BLAS comes from the pinned wheels (scipy-openblas32, mkl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for tool in g++ cmake; do
  command -v "$tool" >/dev/null || { echo "daceml needs '$tool' (a C++ compiler and CMake) on PATH" >&2; exit 1; }
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "daceml needs these Debian packages; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
