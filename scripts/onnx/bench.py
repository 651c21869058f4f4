#!/usr/bin/env python3
"""Rust ONNX embedder vs Python onnxruntime + tokenizers on the same graph, in the same run.

Both sides: the graph featherguard generates (model.featherguard-rows.onnx, weights mapped from
model.safetensors, word-embedding rows passed in as the `word_rows` input), 1 intra-op thread, spinning off, batches of 32 padded to their longest text.
Also measures process start to first semantic verdict of the CLI.

usage: target/onnx-venv/bin/python scripts/onnx/bench.py [--threads N]
(venv: python3 -m venv target/onnx-venv && target/onnx-venv/bin/pip install numpy tokenizers onnxruntime==1.31.1)
"""
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOME = pathlib.Path(os.environ.get("FEATHERGUARD_HOME", pathlib.Path.home() / ".cache/featherguard"))
MODEL = HOME / "models/all-MiniLM-L6-v2"
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target/onnx"))
PROMPT = "Please summarize the attached quarterly report and list the three most important risks for our team."


def sentences(n=1024):
    out = []
    for line in open(ROOT / "semantic/data/default-corpus.jsonl", encoding="utf-8"):
        t = json.loads(line)["text"].replace("\n", " ").strip()
        if 20 <= len(t) <= 200:
            out.append(t)
    step = max(1, len(out) // n)
    return out[::step][:n]


def python_side(texts, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_mem_pattern = False
    sess = ort.InferenceSession(str(MODEL / "model.featherguard-rows.onnx"), so, providers=["CPUExecutionProvider"])
    # The word-embedding table, read from model.safetensors (the graph takes the rows as input).
    raw = open(MODEL / "model.safetensors", "rb").read()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["embeddings.word_embeddings.weight"]
    a, b = meta["data_offsets"]
    table = np.frombuffer(raw, dtype="<f4", count=(b - a) // 4, offset=8 + n + a).reshape(meta["shape"])
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding()

    def embed(batch):
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        v = sess.run(None, {"input_ids": ids, "attention_mask": mask, "word_rows": table[ids]})[0]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for _ in range(20):
        embed([PROMPT])
    lat = []
    for _ in range(200):
        t = time.perf_counter()
        embed([PROMPT])
        lat.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for i in range(0, len(texts), 32):
        embed(texts[i:i + 32])
    per_s = len(texts) / (time.perf_counter() - t)
    rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1e3
    return {"p50_ms": statistics.median(lat), "batch32_per_s": per_s, "rss_mb": rss}


def first_verdict_ms(binary, runs=7):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([str(binary), "scan", "--guards", "pattern,similarity", "What is the capital of France?"],
                       stdout=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    texts = sentences()
    path = TARGET / "bench_sentences.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "featherguard-onnx", "--example", "onnx_bench"],
                   cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)})
    bench = [str(TARGET / "release/examples/onnx_bench"), str(path), "--threads", str(threads)]
    runs = {a: json.loads(subprocess.run(bench + ["--arena", a], capture_output=True, text=True, check=True).stdout)
            for a in ["shrink", "off", "on"]}
    rust = runs["shrink"]
    py = python_side(texts, threads)
    print(json.dumps({"rust_by_arena": runs, "python": py}, indent=1))
    mem = lambda r, k: f"{r[k]['total_mb']:.1f} MB (anon {r[k]['anon_mb']:.1f}, file {r[k]['file_mb']:.1f})"
    for name, r in runs.items():
        print(f"arena {name}: RSS before {mem(r, 'rss_before')}; runtime up {mem(r, 'rss_runtime_up')}; loaded "
              f"{mem(r, 'rss_loaded')}; after {r['sentences']} sentences {mem(r, 'rss_after_all')}; "
              f"unloaded {mem(r, 'rss_unloaded')}; batch-32 {r['batch32_sentences_per_s']:.0f}/s")
    print(f"single prompt ({rust['tokens']} tokens): guard p50 {rust['guard_p50_ms']:.2f} ms, bare session.run "
          f"{rust['bare_run_p50_ms']:.2f} ms (+{100 * (rust['guard_p50_ms'] / rust['bare_run_p50_ms'] - 1):.1f}%), "
          f"python {py['p50_ms']:.2f} ms")
    print(f"batch-32: rust {rust['batch32_sentences_per_s']:.0f}/s, python {py['batch32_per_s']:.0f}/s "
          f"(ratio {rust['batch32_sentences_per_s'] / py['batch32_per_s']:.2f})")
    binary = TARGET / "release/featherguard"
    if binary.exists():
        print(f"process start to first semantic verdict (warm, median of 7): {first_verdict_ms(binary):.0f} ms")


if __name__ == "__main__":
    main()
