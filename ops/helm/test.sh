#!/usr/bin/env bash
# Renders, lints and validates the Helm chart offline: the Helm SDK from PyPI
# (no helm binary, no cluster) and kubernetes-validate, plus our template
# tests (ops/helm/test_chart.py). Creates ops/helm/.venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi
.venv/bin/python test_chart.py
