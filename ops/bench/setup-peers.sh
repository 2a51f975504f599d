#!/usr/bin/env bash
# Installs the peer CKKS libraries from PyPI into ops/bench/.venv. Idempotent:
# re-running reuses the venv and only installs what is missing.
#   SEAL:   seal-python (SEAL 4.x bindings); if it does not install or import,
#           tenseal (which bundles SEAL and exposes it as tenseal.sealapi).
#   DESILO: desilofhe.
set -euo pipefail
cd "$(dirname "$0")"

printf '.venv/\nresults/\n.openfhe/\n' > .gitignore

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
PY=.venv/bin/python
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

has() { "$PY" -c "import $1" >/dev/null 2>&1; }

has numpy || "${PIP[@]}" numpy

if ! has seal; then
    "${PIP[@]}" seal-python || echo "setup-peers: seal-python did not install" >&2
fi
if has seal; then
    seal_via="seal-python"
else
    has tenseal || "${PIP[@]}" tenseal || echo "setup-peers: tenseal did not install" >&2
    if has tenseal.sealapi; then seal_via="tenseal (tenseal.sealapi)"; else seal_via="missing"; fi
fi

has desilofhe || "${PIP[@]}" desilofhe || echo "setup-peers: desilofhe did not install" >&2
if has desilofhe; then desilo_via="desilofhe $("$PY" -m pip show desilofhe 2>/dev/null | awk '/^Version/{print $2}')"; else desilo_via="missing"; fi

echo "peers ready in ops/bench/.venv: SEAL via ${seal_via}; DESILO via ${desilo_via}"
