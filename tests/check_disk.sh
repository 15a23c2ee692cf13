#!/usr/bin/env bash
# Part of tests/run.sh: is there room for the suite? A new .venv takes ~6 GB (torch's CUDA build), the tests'
# temporary files ~1 GB. On a full disk the failures come from deep inside unrelated tests (a CI run once failed
# 28 of them so), so say it here, in one line, before anything starts.
set -euo pipefail
cd "$(dirname "$0")/.."
need_gb=$([ -x "${GLYPH_TRAIN_VENV:-.venv}/bin/python" ] && echo 2 || echo 8)
for dir in . "${TMPDIR:-/tmp}"; do
    free_gb=$(df -Pk "$dir" | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "tests/run.sh: only $free_gb GB free on $(cd "$dir" && pwd); the suite needs about $need_gb GB: free some space" >&2
        exit 1
    fi
done
