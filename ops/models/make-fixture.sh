#!/usr/bin/env bash
# Regenerates tests/fixtures/minilm-embeddings.json with the independent
# numpy implementation (reference_embeddings.py) in a venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
model="$("$here/fetch-minilm.sh")"
venv="$root/target/fixture-venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'numpy==2.*' 'tokenizers==0.22.*'
mkdir -p "$root/tests/fixtures"
"$venv/bin/python" "$here/reference_embeddings.py" "$model" "$root/tests/fixtures/minilm-embeddings.json"
