#!/usr/bin/env bash
# Offline checks of the Dockerfiles (no registry, no daemon): hadolint, and
# the files parsed with BuildKit's parser and checked against the workspace
# and the Helm chart; then a self-test that known breaks are caught. Creates
# ops/docker/.venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi
.venv/bin/python check_dockerfiles.py
.venv/bin/python check_dockerfiles.py --self-test
