#!/usr/bin/env bash
# Rebuilds the default bank and head shipped in semantic/data/ from semantic/data/default-corpus.jsonl
# (Apache-2.0/MIT items only; see docs/guards.md). Needs `cargo xtask setup --only onnx,models`.
# To regenerate the corpus itself from the development corpus first:
#   scripts/onnx/default_corpus.py ../shared/corpus/dev.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/onnx}"
cargo build --release -q -p featherguard-cli --features onnx
bin="$CARGO_TARGET_DIR/release/featherguard"
"$bin" bank build --corpus semantic/data/default-corpus.jsonl --out semantic/data/default-bank.safetensors
"$bin" train --corpus semantic/data/default-corpus.jsonl --out semantic/data/default-head.safetensors
