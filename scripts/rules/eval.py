#!/usr/bin/env python3
"""Evaluate the default rule pack (core/rules/*.toml) without the Rust engine.

This is an approximation of featherguard-core's matcher, good enough to develop rules:

* normalization (docs/rules.md): NFKD, combining marks dropped, lowercase, invisible characters removed,
  Cyrillic/Greek look-alikes folded inside words that mix scripts, Turkish dotless i folded;
* extra views: leetspeak / spaced-letter deobfuscation, decoded base64 / hex / url-encoded segments and
  Unicode tag-character smuggling, each normalized again;
* patterns run as *bytes* regexes (Python `re` on UTF-8), which mirrors Rust `regex::bytes` with Unicode
  classes off: `\\w \\d \\s \\b .` are ASCII/byte classes and a non-ASCII literal matches its UTF-8 bytes.

Usage:
    python3 scripts/rules/eval.py                       # lint + examples + fixtures (+ corpus if present)
    python3 scripts/rules/eval.py --corpus FILE.jsonl   # per-family recall / FP on a labeled corpus
    python3 scripts/rules/eval.py --misses prompt_leak  # print undetected attacks of one family
    python3 scripts/rules/eval.py --fps                 # print benign items that were blocked
    python3 scripts/rules/eval.py --scan "some text"    # show which rules fire

Exit status: 0 when the pack is clean (lint, examples, fixtures), 1 otherwise.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import collections
import glob
import json
import math
import os
import re
import sys
import tomllib
import unicodedata
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES_GLOB = os.path.join(ROOT, "core", "rules", "*.toml")
FIXTURE_ATTACKS = os.path.join(ROOT, "core", "tests", "fixtures", "attacks.jsonl")
FIXTURE_BENIGN = os.path.join(ROOT, "core", "tests", "fixtures", "benign_multilingual.txt")
DEFAULT_CORPUS = "/work/shared/corpus/dev.jsonl"

FAMILIES = {
    "prompt_injection", "indirect_injection", "jailbreak", "prompt_leak", "exfiltration", "tool_abuse",
    "obfuscation", "secret", "pii", "invisible_text", "harmful_content",
}
SEVERITY = {"info": 0.1, "low": 0.35, "medium": 0.6, "high": 0.85, "critical": 1.0}
BLOCK = 0.8
ID_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
# Families whose findings must never appear on the benign multilingual fixture.
INJECTION_FAMILIES = {"prompt_injection", "indirect_injection", "jailbreak", "prompt_leak", "exfiltration",
                      "tool_abuse", "obfuscation", "harmful_content"}

# ---------------------------------------------------------------------------------------------------------
# Normalization (approximation of core/src normalization)

def is_invisible(c: str) -> bool:
    o = ord(c)
    return (o in (0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFEFF, 0xFFA0)
            or 0x180B <= o <= 0x180F or 0x200B <= o <= 0x200F or 0x202A <= o <= 0x202E
            or 0x2060 <= o <= 0x206F or 0xFE00 <= o <= 0xFE0F or 0x1D173 <= o <= 0x1D17A
            or 0xE0000 <= o <= 0xE007F or 0xE0100 <= o <= 0xE01EF)


# Same tables as core/src/normalize.rs (applied to the ORIGINAL char, before lowercasing).
_CONF = {
    "a": "аАαΑ", "b": "вВβΒ", "c": "сСϲ", "d": "ԁ", "e": "еЕεΕё", "g": "ɡ", "h": "һНΗ", "i": "іІїιΙӏ",
    "j": "јЈ", "k": "кКκΚ", "m": "МΜ", "n": "Νη", "o": "оОοΟσ", "p": "рРρΡ", "q": "ԛ", "s": "ѕЅ",
    "t": "ТτΤ", "u": "υ", "v": "ν", "w": "ԝω", "x": "хХχΧ", "y": "уУγΥ", "z": "Ζ",
}
CONFUSABLE = {ch: a for a, chars in _CONF.items() for ch in chars}
LATIN_VARIANT = {"ı": "i", "ȷ": "j", "ɑ": "a", "ł": "l", "Ł": "l", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d",
                 "ß": "s"}


def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("M")


def fold_char(c: str) -> str:
    """Char-by-char fold, as the engine folds non-ASCII pattern text and literals (no look-alikes)."""
    if is_invisible(c):
        return ""
    if c.isascii():
        return c.lower()
    if "\uac00" <= c <= "\ud7a3":
        return c
    out = []
    for d in unicodedata.normalize("NFKD", c):
        if _is_mark(d):
            continue
        d = LATIN_VARIANT.get(d, d)
        out.append(d.lower())
    return "".join(out)


def fold_str(s: str) -> str:
    return "".join(fold_char(c) for c in s)


def fold_pattern(p: str) -> str:
    """Mirror of engine.rs fold_pattern: non-ASCII pattern chars folded, punctuation results escaped."""
    out = []
    for c in p:
        if c.isascii():
            out.append(c)
        else:
            for d in fold_char(c):
                if d.isascii():
                    out.append("\\" + d if not d.isalnum() and d.isprintable() and d != " " else d)
                else:
                    # Python bytes regexes quantify the last byte; Rust quantifies the whole char.
                    out.append("(?:" + d + ")")
    return "".join(out)


def normalize(text: str) -> str:
    out: list[str] = []
    word_start = 0
    has_latin = False
    has_other = False
    conf: list[tuple[int, str]] = []

    def end_word() -> None:
        nonlocal word_start, has_latin, has_other, conf
        if conf and (has_latin or not has_other):
            for pos, a in conf:
                out[pos] = a
        conf = []
        has_latin = has_other = False
        word_start = len(out)

    for c in text:
        if c.isascii():
            lc = c.lower()
            if lc.isalnum():
                has_latin |= lc.isalpha()
            else:
                end_word()
            out.append(lc)
            continue
        if is_invisible(c):
            continue
        if c in CONFUSABLE:
            conf.append((len(out), CONFUSABLE[c]))
            out.append(c.lower())
            continue
        if "\uac00" <= c <= "\ud7a3":
            has_other = True
            out.append(c)
            continue
        for d in unicodedata.normalize("NFKD", c):
            if _is_mark(d):
                continue
            d = LATIN_VARIANT.get(d, d)
            if d.isalnum():
                if d.isascii():
                    has_latin = True
                else:
                    has_other = True
            else:
                end_word()
            out.append(d.lower())
    end_word()
    return "".join(out)


LEET = {"0": "o", "1": "i", "!": "i", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t", "+": "t",
        "8": "b", "9": "g", "|": "l"}
SPACERS = " .-_*/"


def deobfuscate(norm: str) -> str:
    """Mirror of core/src/deobfuscate.rs: leet inside mixed tokens; spaced-out words (>= 4 letters) joined."""
    t = list(norm)
    i = 0
    n = len(t)
    while i < n:
        if not (("a" <= t[i] <= "z") or t[i] in LEET):
            i += 1
            continue
        start = i
        letters = leets = 0
        while i < n and (("a" <= t[i] <= "z") or t[i] in LEET):
            if "a" <= t[i] <= "z":
                letters += 1
            else:
                leets += 1
            i += 1
        if letters == 0 or leets == 0:
            continue
        end = i
        while end > start and t[end - 1] in "!|+$":
            end -= 1
        for j in range(start, end):
            if t[j] in LEET:
                t[j] = LEET[t[j]]
    s = "".join(t)
    out = []
    i = 0
    n = len(s)

    def isl(ch: str) -> bool:
        return "a" <= ch <= "z"

    def run_end(i: int):
        if not isl(s[i]) or (i > 0 and s[i - 1].isascii() and s[i - 1].isalnum()):
            return None
        letters = 1
        j = i + 1
        end = j
        while True:
            gap = j
            while j < n and s[j] in SPACERS and j - gap < 3:
                j += 1
            if j == gap or j >= n or not isl(s[j]):
                break
            if j + 1 < n and s[j + 1].isascii() and s[j + 1].isalnum():
                break
            letters += 1
            j += 1
            end = j
        return end if letters >= 4 else None

    while i < n:
        e = run_end(i)
        if e is not None:
            j = i
            while j < e:
                if isl(s[j]):
                    out.append(s[j])
                    j += 1
                else:
                    g = j
                    while j < e and not isl(s[j]):
                        j += 1
                    if j - g >= 2:
                        out.append(" ")
            i = e
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


B64_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-/_")
HEX_CHARS = set(b"0123456789abcdefABCDEF")
STOP = set(b"\"'`<>(),;")


def _looks_like_text(b: bytes) -> bool:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    total = len(t)
    bad = sum(1 for c in t if unicodedata.category(c) == "Cc" and c not in "\n\r\t")
    letters = sum(1 for c in t if c.isalpha())
    return total >= 4 and bad * 20 <= total and letters * 2 >= total


def _b64(run: bytes) -> bytes:
    run = run.split(b"=")[0].replace(b"-", b"+").replace(b"_", b"/")
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    return base64.b64decode(run + b"=" * (-len(run) % 4))


def _url(run: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(run.replace(b"+", b" "))


def decoded_segments(text: str, depth: int = 2) -> list[str]:
    """Mirror of core/src/decode.rs for_each_segment: non-space runs tried as hex, base64, URL-encoding."""
    out: list[str] = []
    b = text.encode("utf-8")
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c not in B64_CHARS and c != ord("%"):
            i += 1
            continue
        start = end = i
        escapes = 0
        all_b64 = all_hex = True
        while end < n:
            c = b[end]
            if chr(c).isspace() or c in STOP or c >= 0x80:
                break
            if c == ord("%"):
                escapes += 1
            all_b64 &= c in B64_CHARS or c == ord("=")
            all_hex &= c in HEX_CHARS
            end += 1
        hex_end = end
        if all_hex and end - start == 2:
            j = end
            pairs = 1
            while j + 3 <= n and b[j] == 32 and b[j + 1] in HEX_CHARS and b[j + 2] in HEX_CHARS and (
                    j + 3 == n or not (chr(b[j + 3]).isascii() and chr(b[j + 3]).isalnum())):
                j += 3
                pairs += 1
            if pairs >= 8:
                hex_end = j
        run = b[start:hex_end]
        dec = None
        try:
            if hex_end > end or (all_hex and len(run) >= 16 and len(run) % 2 == 0):
                dec = bytes.fromhex(run.decode().replace(" ", ""))
            elif all_b64 and len(run) >= 20:
                dec = _b64(run)
            elif escapes >= 3:
                dec = _url(run)
        except (ValueError, binascii.Error):
            dec = None
        if dec is not None and _looks_like_text(dec):
            out.append(dec.decode("utf-8"))
        i = max(hex_end, start + 1)
    tags = "".join(chr(ord(ch) - 0xE0000) if 0xE0020 <= ord(ch) <= 0xE007E else "\0" for ch in text)
    out.extend(seg for seg in tags.split("\0") if len(seg) >= 2)
    if depth > 1:
        for t in list(out):
            out.extend(decoded_segments(t, depth - 1))
    return out


def views(text: str) -> dict[str, list[bytes]]:
    norm = normalize(text)
    vs = [norm]
    d = deobfuscate(norm)
    if d != norm:
        vs.append(d)
    for seg in decoded_segments(text):
        n = normalize(seg)
        vs.append(n)
        dn = deobfuscate(n)
        if dn != n:
            vs.append(dn)
    return {"normalized": [v.encode("utf-8") for v in vs], "raw": [text.encode("utf-8")]}


# ---------------------------------------------------------------------------------------------------------
# Rules

class Rule:
    def __init__(self, d: dict, path: str):
        self.path = path
        self.id = d.get("id")
        self.family = d.get("family")
        self.severity = d.get("severity")
        self.description = d.get("description", "")
        self.lang = d.get("lang")
        self.view = d.get("view", "normalized")
        self.regex_src = d.get("regex", [])
        self.literals = d.get("literals", [])
        self.validate = d.get("validate")
        ex = d.get("examples", {})
        self.match_ex = ex.get("match", [])
        self.no_match_ex = ex.get("no_match", [])
        self.errors: list[str] = []
        self.compiled: list[re.Pattern] = []
        self._lint(d)

    @property
    def score(self) -> float:
        return SEVERITY.get(self.severity, 0.0)

    def _lint(self, d: dict) -> None:
        known = {"id", "family", "severity", "description", "lang", "view", "regex", "literals", "validate",
                 "examples"}
        for k in d:
            if k not in known:
                self.errors.append(f"unknown key {k!r}")
        if not isinstance(self.id, str) or not ID_RE.match(self.id):
            self.errors.append(f"bad id {self.id!r}")
        if self.family not in FAMILIES:
            self.errors.append(f"bad family {self.family!r}")
        if self.severity not in SEVERITY:
            self.errors.append(f"bad severity {self.severity!r}")
        if self.view not in ("normalized", "raw"):
            self.errors.append(f"bad view {self.view!r}")
        if not self.regex_src and not self.literals:
            self.errors.append("no regex and no literals")
        if not self.match_ex or not self.no_match_ex:
            self.errors.append("examples.match and examples.no_match are required in the default pack")
        if self.validate is not None and self.validate not in ("luhn", "iban") and not (
                isinstance(self.validate, dict) and set(self.validate) == {"entropy"}):
            self.errors.append(f"bad validate {self.validate!r}")
        for src in self.regex_src:
            self._lint_regex(src)
            if self.view == "normalized":
                src = fold_pattern(src)
            try:
                self.compiled.append(re.compile(src.encode("utf-8")))
            except re.error as e:
                self.errors.append(f"regex does not compile: {e}: {src!r}")
        for lit in self.literals:
            if self.view == "normalized":
                lit = fold_str(lit)
            self.compiled.append(re.compile(re.escape(lit.encode("utf-8"))))

    def _lint_regex(self, src: str) -> None:
        for bad, why in (("(?=", "lookahead"), ("(?!", "lookahead"), ("(?<=", "lookbehind"),
                         ("(?<!", "lookbehind"), ("\\x{", "\\x{...} (write the literal char)")):
            if bad in src:
                self.errors.append(f"{why} is not supported: {src!r}")
        if re.search(r"\\[1-9]", src):
            self.errors.append(f"backreference is not supported: {src!r}")
        if re.search(r"(?<!\\)\.[*+](?!\?)", src) or re.search(r"\\S[*+]\\S", src):
            pass
        bare = re.sub(r"\[(?:\\.|[^\]\\])*\]", "[]", re.sub(r"\\.", "E", src))
        if ".*" in bare or ".+" in bare:
            self.errors.append(f"unbounded .* / .+ (use .{{0,N}}): {src!r}")
        # Non-ASCII characters inside [...] are rejected by regex-syntax when Unicode is off.
        in_class = False
        esc = False
        for ch in src:
            if esc:
                esc = False
                continue
            if ch == "\\":
                esc = True
                continue
            if ch == "[" and not in_class:
                in_class = True
            elif ch == "]" and in_class:
                in_class = False
            elif in_class and not ch.isascii():
                self.errors.append(f"non-ASCII {ch!r} inside a [...] class (use an alternation): {src!r}")
                break
        if self.view == "normalized":
            if re.search(r"(?<!\\)[A-Z]", re.sub(r"\\[pPx]\{[^}]*\}|\(\?P<\w+>|\[:\w+:\]|\\[A-Z]", "", src)):
                self.errors.append(f"uppercase letter in a normalized pattern: {src!r}")

    def find(self, vs: dict[str, list[bytes]]) -> bool:
        for v in vs[self.view]:
            for rx in self.compiled:
                for m in rx.finditer(v):
                    if self._valid(m):
                        return True
        return False

    def _valid(self, m: re.Match) -> bool:
        if self.validate is None:
            return True
        s = m.group(0)
        if "v" in m.re.groupindex and m.group("v") is not None:
            s = m.group("v")
        s = s.decode("utf-8", "replace")
        if self.validate == "luhn":
            return luhn(s)
        if self.validate == "iban":
            return iban(s)
        return entropy(s) >= float(self.validate["entropy"])


def luhn(s: str) -> bool:
    digits = [int(c) for c in s if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, dgt in enumerate(reversed(digits)):
        if i % 2 == 1:
            dgt *= 2
            if dgt > 9:
                dgt -= 9
        total += dgt
    return total % 10 == 0


def iban(s: str) -> bool:
    s = re.sub(r"[\s-]", "", s).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s):
        return False
    r = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in r)
    return int(num) % 97 == 1


def entropy(s: str) -> float:
    if not s:
        return 0.0
    b = s.encode("utf-8")
    c = collections.Counter(b)
    n = len(b)
    return -sum(v / n * math.log2(v / n) for v in c.values())


def load_rules() -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in sorted(glob.glob(RULES_GLOB)):
        with open(path, "rb") as f:
            try:
                doc = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                print(f"{path}: TOML error: {e}")
                sys.exit(1)
        for d in doc.get("rule", []):
            r = Rule(d, path)
            if r.id in seen:
                r.errors.append(f"duplicate id (also in {seen[r.id]})")
            seen[r.id] = os.path.basename(path)
            rules.append(r)
    return rules


def scan(rules: list[Rule], text: str) -> list[Rule]:
    vs = views(text)
    return [r for r in rules if r.find(vs)]


def max_score(hits: list[Rule]) -> float:
    return max((r.score for r in hits), default=0.0)


# ---------------------------------------------------------------------------------------------------------

def check_pack(rules: list[Rule]) -> int:
    bad = 0
    for r in rules:
        for e in r.errors:
            print(f"LINT {os.path.basename(r.path)} {r.id}: {e}")
            bad += 1
        if r.errors:
            continue
        for ex in r.match_ex:
            if not r.find(views(ex)):
                print(f"EXAMPLE {r.id}: should match: {ex!r}")
                bad += 1
        for ex in r.no_match_ex:
            if r.find(views(ex)):
                print(f"EXAMPLE {r.id}: should NOT match: {ex!r}")
                bad += 1
    return bad


def check_fixtures(rules: list[Rule], verbose: bool) -> int:
    bad = 0
    if os.path.exists(FIXTURE_BENIGN):
        n = 0
        for line in open(FIXTURE_BENIGN, encoding="utf-8"):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            n += 1
            hits = [r for r in scan(rules, line) if r.family in INJECTION_FAMILIES]
            if hits:
                bad += 1
                print(f"BENIGN FIXTURE flagged by {[r.id for r in hits]}: {line!r}")
        if verbose:
            print(f"benign_multilingual.txt: {n} lines")
    if os.path.exists(FIXTURE_ATTACKS):
        n = 0
        for i, line in enumerate(open(FIXTURE_ATTACKS, encoding="utf-8"), 1):
            if not line.strip():
                continue
            d = json.loads(line)
            n += 1
            hits = scan(rules, d["text"])
            if max_score(hits) < BLOCK:
                bad += 1
                print(f"ATTACK FIXTURE line {i} not blocked ({[r.id for r in hits]}): {d['text'][:160]!r}")
        if verbose:
            print(f"attacks.jsonl: {n} items")
    return bad


def fam_of(cat: str) -> str:
    return (cat or "unknown").split(":")[0]


def in_scope(d: dict) -> bool:
    cat = d.get("category") or ""
    return d["label"] == "attack" and fam_of(cat) != "harmful_request" and cat not in (
        "jailbreak:past_tense_reformulation", "jailbreak:future_tense_reformulation")


def eval_corpus(rules: list[Rule], path: str, misses: str | None, show_fps: bool) -> None:
    fam = collections.defaultdict(lambda: [0, 0])
    scope = [0, 0]
    fp: list[tuple[dict, list[Rule]]] = []
    flagged_benign = 0
    benign = 0
    missed: list[dict] = []
    rule_hits = collections.Counter()
    for line in open(path, encoding="utf-8"):
        d = json.loads(line)
        hits = scan(rules, d["text"])
        blocked = max_score(hits) >= BLOCK
        for r in hits:
            if r.score >= BLOCK:
                rule_hits[r.id] += 1
        if d["label"] == "benign":
            benign += 1
            if blocked:
                fp.append((d, hits))
            elif hits:
                flagged_benign += 1
            continue
        cat = d.get("category") or ""
        key = fam_of(cat)
        if cat in ("jailbreak:past_tense_reformulation", "jailbreak:future_tense_reformulation"):
            key = "jailbreak(tense)"
        fam[key][0] += 1
        fam[key][1] += blocked
        if in_scope(d):
            scope[0] += 1
            scope[1] += blocked
        if not blocked and misses and (misses == "all" and in_scope(d) or key == misses or cat == misses):
            missed.append(d)
    print(f"\n{'family':<22}{'n':>6}{'blocked':>9}{'recall':>9}")
    for k in sorted(fam):
        n, b = fam[k]
        print(f"{k:<22}{n:>6}{b:>9}{100 * b / n:>8.1f}%")
    print(f"{'INJECTION-STYLE':<22}{scope[0]:>6}{scope[1]:>9}{100 * scope[1] / max(scope[0], 1):>8.1f}%")
    print(f"{'benign FP (block)':<22}{benign:>6}{len(fp):>9}{100 * len(fp) / max(benign, 1):>8.2f}%")
    print(f"{'benign flagged only':<22}{benign:>6}{flagged_benign:>9}")
    if show_fps:
        for d, hits in fp:
            print(f"FP {[r.id for r in hits if r.score >= BLOCK]} {d.get('category')}: {d['text'][:300]!r}")
    for d in missed:
        print(f"MISS {d.get('category')}: {d['text'][:400]!r}")
    if os.environ.get("RULE_HITS"):
        for k, v in rule_hits.most_common():
            print(f"{v:>5} {k}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--misses", default=None, help="family or category (or 'all') whose misses to print")
    ap.add_argument("--fps", action="store_true")
    ap.add_argument("--scan", nargs="*")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    rules = load_rules()
    if a.scan:
        for t in a.scan:
            hits = scan(rules, t)
            print(f"{max_score(hits):.2f} {[(r.id, r.severity) for r in hits]}")
            if a.verbose:
                for k, v in views(t).items():
                    print(k, v)
        return 0
    fams = collections.Counter(r.family for r in rules)
    print(f"{len(rules)} rules: " + ", ".join(f"{k} {v}" for k, v in sorted(fams.items())))
    bad = check_pack(rules)
    bad += check_fixtures(rules, a.verbose)
    corpus = a.corpus or (DEFAULT_CORPUS if os.path.exists(DEFAULT_CORPUS) else None)
    if corpus:
        eval_corpus(rules, corpus, a.misses, a.fps)
    print(f"\n{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
