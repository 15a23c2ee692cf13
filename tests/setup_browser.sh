#!/usr/bin/env bash
# The browser tests' Chromium: Debian's chromium + chromium-driver, installed only when missing (CI runs as
# root). Nothing else is downloaded: Selenium drives this system browser.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup_browser.sh: install Debian's chromium and chromium-driver to run the browser tests" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
