#!/usr/bin/env bash
# Headless Chromium for the GUI's end-to-end tests (Debian's chromium package; Playwright
# drives it through executable_path, so Playwright's own browser download is never used).
# Idempotent: does nothing when /usr/bin/chromium exists. Installs with apt-get when root;
# otherwise says what to install and exits 0 (the browser tests then skip with that reason).
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian package: chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  [ -x "$CHROMIUM" ] || { echo "apt-get installed chromium but $CHROMIUM is missing" >&2; exit 1; }
else
  echo "the GUI browser tests need Debian's chromium; install it as root: apt-get install chromium" >&2
fi
