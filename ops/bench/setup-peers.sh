#!/usr/bin/env bash
# Installs the peer CKKS libraries from PyPI into ops/bench/.venv (idempotent).
# SEAL: seal-python (SEAL 4.x bindings; tenseal as a second SEAL build),
# DESILO: desilofhe. OpenFHE's wheel does not load on this Python (3.11).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q numpy seal-python desilofhe tenseal
.venv/bin/python -c "import seal, desilofhe, numpy; print('peers ready: seal-python, desilofhe', desilofhe.__version__ if hasattr(desilofhe, '__version__') else '')"
