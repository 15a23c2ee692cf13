#!/usr/bin/env bash
# g++ for the AMX neighbour-search kernel (glyph_train/evaluation/amx_search.py compiles it on first use),
# installed from Debian when missing and we may (root + apt-get). Without it the search falls back to FAISS.
set -euo pipefail
command -v g++ >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
else
    echo "no g++ and no way to install it: the AMX search tests will be skipped" >&2
fi
