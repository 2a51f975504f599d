#!/usr/bin/env python3
"""Independent sentence embeddings of all-MiniLM-L6-v2 for the Rust tests.

numpy over the same model.safetensors (parsed here from its JSON header,
no shared code with the Rust model) and the Python `tokenizers` package
for token ids. Writes tests/fixtures/minilm-embeddings.json:
{"model": ..., "sentences": [{"text", "ids", "embedding"}]}.

    ops/models/make-fixture.sh   (sets up the venv, runs this)
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Encrypted inference keeps the input private.",
    "A cat sleeps on the warm windowsill.",
    "Homomorphic encryption lets a server compute on data it cannot read.",
]


def load(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype="<f4")
        tensors[name] = data.reshape(info["shape"]).astype(np.float64)
    return tensors


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # erf GELU; numpy has no erf, so use the Abramowitz-Stegun-free route
    # through math.erf element-wise (exact to double precision).
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def embed(t, cfg, ids):
    eps = cfg["layer_norm_eps"]
    x = t["embeddings.word_embeddings.weight"][ids]
    x = x + t["embeddings.position_embeddings.weight"][: len(ids)]
    x = x + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    heads = cfg["num_attention_heads"]
    dh = cfg["hidden_size"] // heads
    lin = lambda x, name: x @ t[name + ".weight"].T + t[name + ".bias"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = lin(x, p + "attention.self.query").reshape(len(ids), heads, dh).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(len(ids), heads, dh).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(len(ids), heads, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = layer_norm(
            lin(ctx, p + "attention.output.dense") + x,
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = gelu(lin(x, p + "intermediate.dense"))
        x = layer_norm(
            lin(h, p + "output.dense") + x,
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            eps,
        )
    e = x.mean(0)
    return e / np.linalg.norm(e)


def main():
    model = Path(sys.argv[1])
    out = Path(sys.argv[2])
    cfg = json.loads((model / "config.json").read_text())
    t = load(model / "model.safetensors")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()  # tokenizer.json pads to 128; the model sees real tokens only
    rows = []
    for text in SENTENCES:
        ids = tok.encode(text).ids
        rows.append({"text": text, "ids": ids, "embedding": [round(float(v), 9) for v in embed(t, cfg, ids)]})
    lines = ",\n".join("  " + json.dumps(r) for r in rows)
    out.write_text('{"model": "sentence-transformers/all-MiniLM-L6-v2", "sentences": [\n' + lines + "\n]}\n")
    print(f"wrote {len(rows)} sentences to {out}")


if __name__ == "__main__":
    main()
