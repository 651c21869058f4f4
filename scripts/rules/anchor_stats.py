#!/usr/bin/env python3
"""How selective are the default pack's anchors? Reads the file core/build.rs generates
(target/**/build/featherguard-core-*/out/default_pack.rs), then for each text of a JSONL corpus counts the
patterns whose anchor literals occur (those patterns must run). Patterns with no anchors run on every text.

    python3 scripts/rules/anchor_stats.py [GENERATED_RS] [--corpus FILE.jsonl] [--label benign] [--top 25]
"""
import argparse
import collections
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval as E  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(path):
    src = open(path, encoding="utf-8").read()
    out = []
    for m in re.finditer(r'StaticRule \{ id: "([^"]+)".*?view: ViewKind::(\w+), regex: &\[(.*?)\], (?:anchors|gates): &\[(.*?)\], literals', src):
        rid, view, regexes, anchors = m.groups()
        pats = re.findall(r'"((?:[^"\\]|\\.)*)"', regexes)
        groups = re.findall(r'None|Some\((?:\(\w+, )?&\[(.*?)\]\)?\)', anchors)
        for i, g in enumerate(groups):
            lits = None
            if g:
                lits = [eval(x) for x in re.findall(r'b"(?:[^"\\]|\\.)*"', g)]
            out.append((rid, view, pats[i] if i < len(pats) else "?", lits))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("generated", nargs="?")
    ap.add_argument("--corpus", default="/work/shared/corpus/dev.jsonl")
    ap.add_argument("--label", default="benign")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    gens = sorted(glob.glob(os.path.join(ROOT, "target/**/build/featherguard-core-*/out/default_pack.rs"),
                            recursive=True), key=os.path.getmtime, reverse=True)
    gen = a.generated or next((g for g in gens if parse(g)), gens[0] if gens else None)
    pats = parse(gen)
    if not pats:
        sys.exit(f"{gen}: no StaticRule entries with precomputed anchors found (generated format changed?)")
    texts = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8")
             if not a.label or json.loads(l).get("label") == a.label]
    cnt = collections.Counter()
    total = 0
    for t in texts:
        views = [E.normalize(t).encode("utf-8"), t.encode("utf-8")]
        for i, (_, view, _, lits) in enumerate(pats):
            if lits is None:
                continue
            hay = views[1] if view == "Raw" else views[0]
            if any(x in hay for x in lits):
                cnt[i] += 1
                total += 1
    un = [p for p in pats if p[3] is None]
    print(f"{gen}\n{len(pats)} patterns, {len(un)} without anchors (run on every text)")
    print(f"{len(texts)} texts: {total / max(len(texts), 1):.1f} anchored patterns triggered per text on average")
    for rid, _, p, _ in un:
        print(f"  unanchored {rid}: {p[:90]}")
    for i, c in cnt.most_common(a.top):
        rid, _, p, lits = pats[i]
        print(f"{c:>6} {rid}: {p[:70]}  anchors={[x[:8] for x in lits[:6]]}")


if __name__ == "__main__":
    main()
