//! Pattern syntax checks and gate extraction: literals that must occur in any match of a pattern.
//! One multi-literal automaton over all gates decides which patterns need to run at all.
//! Depends only on `regex-syntax` so `build.rs` can include it and precompute the default pack.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind, Literal, Look};

/// Most literals one gate may have before the pattern is treated as ungated.
const MAX_GATE_LITERALS: usize = 512;

/// Literals that gate a pattern, lowercase ASCII (gates are matched ASCII-case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every match starts with one of these: the pattern runs anchored where one occurs. The
    /// flag: the pattern starts with a word boundary (`\b`), so a literal starting with a word
    /// byte occurs in a match only right after a non-word byte.
    Prefix(Vec<Vec<u8>>, bool),
    /// Every match contains one of these: the pattern runs over the text when one occurs; what
    /// every match holds right before the piece.
    Inner(Vec<Vec<u8>>, Before),
}

/// What every match holds right before an inner gate piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Nothing known.
    Any,
    /// A word boundary (`\b`): a literal starting with a word byte follows a non-word byte.
    Boundary,
    /// An ASCII letter (`[A-Z]{2}` before `\d{2}`): a literal starting with a digit follows a
    /// letter.
    Letter,
}

/// Parse a pattern the way the engine compiles it: Unicode classes off, byte-oriented.
pub fn parse(pattern: &str) -> Result<Hir, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| {
            // regex-syntax prints the pattern with a caret; the last line is the reason.
            let msg = e.to_string();
            let reason = msg
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            format!("invalid regex: {}", reason.trim_start_matches("error: "))
        })?;
    if hir.properties().minimum_len() == Some(0) {
        return Err("regex can match the empty string; every pattern must consume text".into());
    }
    Ok(hir)
}

/// Inner gates cost a scan of the whole view when they fire, prefix gates one anchored attempt:
/// an inner gate must be this much rarer to be chosen.
const INNER_PENALTY: f64 = 3.0;

/// The most selective gate of a parsed pattern, or `None` when no finite literal set is required
/// (the pattern then runs over every text). Candidates are the literal prefixes of the pattern and
/// of each required piece of a top-level concatenation; the one expected to occur least wins.
pub fn gate(hir: &Hir) -> Option<Gate> {
    let hir = fold_ascii_case(hir);
    let mut node = &hir;
    while let HirKind::Capture(c) = node.kind() {
        node = &c.sub;
    }
    let children = match node.kind() {
        HirKind::Concat(children) => &children[..],
        _ => &[],
    };
    let after_boundary = |i: usize| {
        i > 0
            && matches!(
                children[i - 1].kind(),
                HirKind::Look(Look::WordAscii | Look::WordStartAscii)
            )
    };
    // A prefix gate after a leading `\b` fires only at word starts too: the first piece with
    // literals decides, as the extractor reads through the look-around.
    let leading = children
        .iter()
        .position(|c| !matches!(c.kind(), HirKind::Look(_)))
        .is_some_and(after_boundary);
    let mut best =
        literal_set(&hir).map(|lits| (gate_cost(&lits, leading), Gate::Prefix(lits, leading)));
    let mut seen: Vec<Vec<Vec<u8>>> = Vec::new();
    for (i, lits) in children
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, literal_set(c)?)))
    {
        // The split runs at the first piece with these literals (`split_at_gate`): a later
        // piece with the same ones must not lend the gate its word-boundary flag.
        if seen.contains(&lits) {
            continue;
        }
        let cost = gate_cost(&lits, after_boundary(i)) * INNER_PENALTY;
        // Strictly better only: the first piece wins ties (`@` before `.` in an e-mail pattern).
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            let before = if after_boundary(i) {
                Before::Boundary
            } else if i > 0
                && last_bytes(&children[i - 1]).is_some_and(|set| {
                    (0..=255u8).all(|b| !set[usize::from(b)] || b.is_ascii_alphabetic())
                })
            {
                Before::Letter
            } else {
                Before::Any
            };
            best = Some((cost, Gate::Inner(lits.clone(), before)));
        }
        seen.push(lits);
    }
    best.map(|(_, g)| g)
}

/// Expected occurrences of a gate per text position: a literal that starts with a word byte and
/// must follow a word boundary occurs only at word starts, one byte in `AVG_WORD_BYTES`.
fn gate_cost(lits: &[Vec<u8>], after_boundary: bool) -> f64 {
    lits.iter()
        .map(|l| {
            let word_start = after_boundary
                && l.first()
                    .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
            literal_cost(l, word_start)
        })
        .sum()
}

/// The pattern split around the first top-level piece whose literal prefixes are exactly `lits`
/// (an inner gate): `(before, rest)`, so that a match through a gate hit at `p` is `before` ending
/// at `p` followed by `rest` starting there. `None` when no piece has exactly these prefixes.
pub fn split_at_gate(hir: &Hir, lits: &[Vec<u8>]) -> Option<(Hir, Hir)> {
    let mut node = hir;
    while let HirKind::Capture(c) = node.kind() {
        node = &c.sub;
    }
    let HirKind::Concat(children) = node.kind() else {
        return None;
    };
    let at = children
        .iter()
        .position(|c| literal_set(&fold_ascii_case(c)).as_deref() == Some(lits))?;
    Some((
        Hir::concat(children[..at].to_vec()),
        Hir::concat(children[at..].to_vec()),
    ))
}

/// The bytes every match of `hir` ends with, or `None` when it can match the empty string.
pub fn last_bytes(hir: &Hir) -> Option<[bool; 256]> {
    let mut set = [false; 256];
    (!ends_with(hir, &mut set)).then_some(set)
}

/// Adds to `set` the bytes a match of `hir` can end with; returns whether it can be empty (then
/// the bytes before it can end the match too).
fn ends_with(hir: &Hir, set: &mut [bool; 256]) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(Literal(bytes)) => match bytes.last() {
            Some(&b) => {
                set[usize::from(b)] = true;
                false
            }
            None => true,
        },
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[usize::from(b)] = true;
                }
            }
            c.ranges().is_empty()
        }
        HirKind::Class(Class::Unicode(c)) => {
            for r in c.ranges() {
                // A non-ASCII char ends with a continuation byte.
                let hi = u32::from(r.end()).min(0x7F);
                for b in u32::from(r.start())..=hi {
                    set[b as usize] = true;
                }
                if u32::from(r.end()) > 0x7F {
                    set[0x80..0xC0].fill(true);
                }
            }
            c.ranges().is_empty()
        }
        HirKind::Repetition(rep) => ends_with(&rep.sub, set) || rep.min == 0,
        HirKind::Capture(cap) => ends_with(&cap.sub, set),
        HirKind::Concat(subs) => subs.iter().rev().all(|sub| ends_with(sub, set)),
        HirKind::Alternation(subs) => {
            // Every branch adds its bytes, so no short-circuit.
            let mut empty = false;
            for sub in subs {
                empty |= ends_with(sub, set);
            }
            empty
        }
    }
}

/// Offsets from a match start that a [`Follow`] describes.
pub const FOLLOW_SPAN: usize = 8;

/// Which bytes may stand at each of the first offsets of any match: a necessary condition that
/// rejects most gate hits (a digit of "Ref 35761" for a card pattern) in a few loads, before a
/// DFA runs. Bit `i` of `table[b]` is set when byte `b` may stand `i` bytes after the start;
/// every match is at least `len` bytes long (`len <= FOLLOW_SPAN`).
pub struct Follow {
    pub len: usize,
    pub table: [u8; 256],
}

impl Follow {
    /// Whether a match may start at `at` in `text`.
    #[inline]
    pub fn admits(&self, text: &[u8], at: usize) -> bool {
        self.admits_after(text, at, 0)
    }

    /// [`Follow::admits`] when the first `known` bytes at `at` are already known to be ones a
    /// match may start with (a gate literal found there): only the bytes after them are looked at.
    #[inline]
    pub fn admits_after(&self, text: &[u8], at: usize, known: usize) -> bool {
        let Some(bytes) = text.get(at..at + self.len) else {
            return false;
        };
        bytes
            .iter()
            .enumerate()
            .skip(known)
            .all(|(i, &b)| self.table[usize::from(b)] >> i & 1 != 0)
    }
}

/// The [`Follow`] of a parsed pattern, from its start.
pub fn follow(hir: &Hir) -> Follow {
    let mut table = [0u8; 256];
    let ends = follow_walk(hir, 1, &mut table);
    Follow {
        len: (ends.trailing_zeros() as usize).min(FOLLOW_SPAN),
        table,
    }
}

/// A set of offsets from the match start: bit `o` for `o < FOLLOW_SPAN`, and [`BEYOND`] for any
/// offset past them (where nothing is recorded).
type Offsets = u16;
const BEYOND: Offsets = 1 << FOLLOW_SPAN;
const NEAR: Offsets = BEYOND - 1;

/// Every offset of `offsets` moved `n` bytes on.
fn shift(offsets: Offsets, n: usize) -> Offsets {
    if offsets == 0 {
        return 0;
    }
    if n >= FOLLOW_SPAN {
        return BEYOND;
    }
    let moved = u32::from(offsets & NEAR) << n;
    let mut out = (moved as Offsets) & NEAR;
    if moved > u32::from(NEAR) || offsets & BEYOND != 0 {
        out |= BEYOND;
    }
    out
}

/// Records in `table` the bytes `hir` may put at each offset when it starts at one of `ins`;
/// returns the offsets it may end at. Over-approximates (bounded repetitions are walked like
/// unbounded ones, look-arounds ignored), never under.
fn follow_walk(hir: &Hir, ins: Offsets, table: &mut [u8; 256]) -> Offsets {
    if ins & NEAR == 0 {
        return ins;
    }
    let near = (ins & NEAR) as u8;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => ins,
        HirKind::Literal(Literal(bytes)) => {
            for (j, &b) in bytes.iter().enumerate() {
                table[usize::from(b)] |= (shift(ins, j) & NEAR) as u8;
            }
            shift(ins, bytes.len())
        }
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    table[usize::from(b)] |= near;
                }
            }
            shift(ins, 1)
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut out = shift(ins, 1);
            for r in c.ranges() {
                let hi = u32::from(r.end()).min(0x7F);
                for b in u32::from(r.start())..=hi {
                    table[b as usize] |= near;
                }
                if u32::from(r.end()) > 0x7F {
                    // Any lead and continuation bytes, over the two to four bytes of the char.
                    let spread = ins | shift(ins, 1) | shift(ins, 2) | shift(ins, 3);
                    for t in &mut table[0x80..] {
                        *t |= (spread & NEAR) as u8;
                    }
                    out |= shift(ins, 2) | shift(ins, 3) | shift(ins, 4);
                }
            }
            out
        }
        HirKind::Repetition(rep) => {
            let mut cur = ins;
            for _ in 0..rep.min {
                let next = follow_walk(&rep.sub, cur, table);
                if next == cur || next & NEAR == 0 {
                    // A fixpoint, or everything past the span: more rounds change nothing.
                    cur = next;
                    break;
                }
                cur = next;
            }
            if rep.max == Some(rep.min) {
                return cur;
            }
            let mut all = cur;
            loop {
                let next = follow_walk(&rep.sub, all, table);
                if next & !all == 0 {
                    return all;
                }
                all |= next;
            }
        }
        HirKind::Capture(cap) => follow_walk(&cap.sub, ins, table),
        HirKind::Concat(subs) => subs.iter().fold(ins, |at, sub| follow_walk(sub, at, table)),
        HirKind::Alternation(subs) => subs
            .iter()
            .fold(0, |out, sub| out | follow_walk(sub, ins, table)),
    }
}

/// Probability that `lit` starts at a given position of lowercase text (at a word start only,
/// with `word_start`): byte frequencies, but at least the frequency of the common words it
/// begins (byte products badly underrate "and"; those are word starts already).
fn literal_cost(lit: &[u8], word_start: bool) -> f64 {
    let mut bytes: f64 = lit.iter().map(|&b| byte_frequency(b)).product();
    if word_start {
        bytes /= AVG_WORD_BYTES;
    }
    let words: f64 = COMMON_WORDS
        .iter()
        .filter(|(w, _)| w.as_bytes().starts_with(lit))
        .map(|(_, per_thousand)| per_thousand / 1000.0 / AVG_WORD_BYTES)
        .sum();
    bytes.max(words)
}

/// Bytes per word including the space, to turn word frequencies into per-position ones.
const AVG_WORD_BYTES: f64 = 5.5;

/// Frequent words of English prompts and documents, per thousand words (rounded, from common
/// word-frequency lists); only a prior for choosing gates, so precision does not matter.
const COMMON_WORDS: &[(&str, f64)] = &[
    ("the", 50.0),
    ("of", 25.0),
    ("and", 25.0),
    ("to", 24.0),
    ("a", 20.0),
    ("in", 18.0),
    ("is", 10.0),
    ("you", 10.0),
    ("that", 10.0),
    ("it", 9.0),
    ("for", 8.0),
    ("i", 8.0),
    ("on", 6.0),
    ("with", 6.0),
    ("as", 6.0),
    ("this", 6.0),
    ("be", 6.0),
    ("are", 5.0),
    ("your", 5.0),
    ("or", 5.0),
    ("can", 4.0),
    ("by", 4.0),
    ("from", 4.0),
    ("not", 4.0),
    ("what", 3.0),
    ("all", 3.0),
    ("have", 3.0),
    ("an", 3.0),
    ("we", 3.0),
    ("do", 3.0),
    ("my", 3.0),
    ("me", 3.0),
    ("if", 3.0),
    ("will", 3.0),
    ("at", 3.0),
    ("how", 3.0),
    ("use", 2.0),
    ("write", 2.0),
    ("so", 2.0),
    ("about", 2.0),
    ("which", 2.0),
    ("one", 2.0),
    ("there", 2.0),
    ("their", 2.0),
    ("they", 2.0),
    ("more", 2.0),
    ("would", 2.0),
    ("should", 1.5),
    ("make", 1.5),
    ("like", 1.5),
    ("them", 1.5),
    ("new", 1.5),
    ("some", 1.5),
    ("time", 1.5),
    ("please", 1.5),
    ("help", 1.5),
    ("now", 1.5),
    ("just", 1.5),
    ("also", 1.5),
    ("any", 1.5),
    ("get", 1.5),
    ("give", 1.0),
    ("tell", 1.0),
    ("show", 1.0),
    ("list", 1.0),
    ("before", 1.0),
    ("after", 1.0),
    ("end", 1.0),
    ("words", 1.0),
    ("word", 1.0),
    ("email", 1.0),
    ("content", 1.0),
    ("program", 1.0),
    ("data", 1.0),
    ("code", 1.0),
    ("text", 1.0),
    ("file", 1.0),
    ("user", 1.0),
    ("following", 1.0),
    ("information", 1.0),
    ("add", 1.0),
    ("following", 1.0),
    ("system", 0.8),
    ("answer", 0.8),
    ("question", 0.8),
    ("example", 0.8),
    ("here", 0.8),
    ("into", 0.8),
    ("out", 0.8),
    ("up", 0.8),
    ("no", 0.8),
    ("only", 0.8),
    ("its", 0.8),
    ("our", 0.8),
    ("but", 0.8),
    ("was", 0.8),
    ("create", 0.6),
    ("explain", 0.6),
    ("provide", 0.6),
    ("using", 0.6),
    ("need", 0.6),
    ("want", 0.6),
];

/// Approximate frequency of a byte in normalized (lowercase) prose and code.
fn byte_frequency(b: u8) -> f64 {
    const LETTERS: [f64; 26] = [
        0.065, 0.012, 0.022, 0.034, 0.10, 0.018, 0.016, 0.049, 0.056, 0.001, 0.006, 0.032, 0.019,
        0.054, 0.060, 0.015, 0.001, 0.048, 0.051, 0.072, 0.022, 0.008, 0.019, 0.002, 0.016, 0.001,
    ];
    match b {
        b'a'..=b'z' => LETTERS[usize::from(b - b'a')],
        b' ' => 0.16,
        b'0'..=b'9' => 0.02,
        b'.' | b',' => 0.01,
        b'\n' | b'\'' | b'"' | b'-' | b'(' | b')' | b':' | b'/' => 0.004,
        0x80..=0xff => 0.02,
        _ => 0.001,
    }
}

/// The finite set of non-empty literals one of which every match of `hir` starts with.
fn literal_set(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    // Unoptimized on purpose: whole words are rarer than the shortened prefixes the optimizer picks.
    // A high total limit so big sets (`4\d{3}|5[1-5]\d{2}|...`) come out finite and are cut to
    // short prefixes below, rather than given up on.
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(20_000)
        .extract(hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    if lits.len() > MAX_GATE_LITERALS {
        // A prefix of a gate literal is a gate literal: `4\d{3}` gives 1,000 literals, `4` one.
        return (1..=3).rev().find_map(|n| {
            let mut cut: Vec<Vec<u8>> = lits
                .iter()
                .map(|l| l.as_bytes()[..l.len().min(n)].to_ascii_lowercase())
                .collect();
            cut.sort();
            cut.dedup();
            (cut.len() <= MAX_GATE_LITERALS).then_some(cut)
        });
    }
    // `ignore\s+` expands to `ignore ` / `ignore\t` / ...: the whitespace adds no selectivity.
    let mut out: Vec<Vec<u8>> = lits
        .iter()
        .map(|l| {
            let b = l.as_bytes();
            let keep = b
                .iter()
                .rposition(|c| !c.is_ascii_whitespace())
                .map_or(b.len(), |i| i + 1);
            b[..keep].to_ascii_lowercase()
        })
        .collect();
    out.sort();
    out.dedup();
    // A literal whose prefix is also in the set adds nothing: every text it occurs in has the prefix.
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(out.len());
    for lit in out {
        if !kept.last().is_some_and(|k| lit.starts_with(k)) {
            kept.push(lit);
        }
    }
    Some(kept)
}

/// `hir` with ASCII letters lowercased and `[aA]`-style case classes turned into literals, so
/// `(?i)` patterns yield a small set of lowercase gates instead of every case combination.
fn fold_ascii_case(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Literal(Literal(bytes)) => Hir::literal(bytes.to_ascii_lowercase()),
        HirKind::Class(class) => match case_pair(class) {
            Some(b) => Hir::literal([b]),
            None => hir.clone(),
        },
        HirKind::Repetition(rep) => {
            let mut rep = rep.clone();
            rep.sub = Box::new(fold_ascii_case(&rep.sub));
            Hir::repetition(rep)
        }
        HirKind::Capture(cap) => {
            let mut cap = cap.clone();
            cap.sub = Box::new(fold_ascii_case(&cap.sub));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(fold_ascii_case).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(fold_ascii_case).collect()),
        HirKind::Empty | HirKind::Look(_) => hir.clone(),
    }
}

/// The lowercase letter when `class` is exactly one ASCII letter in both cases.
fn case_pair(class: &Class) -> Option<u8> {
    let ranges: Vec<(u32, u32)> = match class {
        Class::Bytes(c) => c
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        Class::Unicode(c) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
    };
    match ranges[..] {
        [(a, a2), (b, b2)] if a == a2 && b == b2 && a < 128 && b < 128 => {
            let (a, b) = (a as u8, b as u8);
            (a.is_ascii_uppercase() && b == a.to_ascii_lowercase()).then_some(b)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_of(p: &str) -> Option<Gate> {
        gate(&parse(p).unwrap())
    }

    fn admits(pattern: &str, text: &str, at: usize) -> bool {
        follow(&parse(pattern).unwrap()).admits(text.as_bytes(), at)
    }

    #[test]
    fn follow_rejects_starts_no_match_can_have() {
        let card = r"\b(?:4\d{3}|5[1-5]\d{2}|3[47]\d{2})(?:[ \-]?\d){8,15}\b";
        assert!(admits(card, "4111 1111 1111 1111", 0));
        assert!(admits(card, "x 4111-1111-1111-1111", 2));
        assert!(
            !admits(card, "Ref 35761 To", 4),
            "a letter within the first 8 bytes"
        );
        assert!(!admits(card, "4111", 0), "text shorter than any match");
        let rev = r"(?i)\b(?:backwards?|in\s+reverse)\b";
        assert!(admits(rev, "read it in  reverse", 8));
        assert!(admits(rev, "BACKWARD", 0));
        assert!(!admits(rev, "in the", 0));
        assert!(!admits(rev, "backup", 0));
        // Optional and repeated pieces: every alignment is allowed.
        let opt = r"a(?:bc)?d{2,}e";
        assert!(admits(opt, "adde", 0));
        assert!(admits(opt, "abcdddde", 0));
        assert!(!admits(opt, "axdde", 0));
        // Non-ASCII text is bytes of its UTF-8 encoding.
        assert!(admits("x(?:é|ü)y", "xüy", 0));
        assert!(!admits("x(?:é|ü)y", "xay", 0));
    }

    #[test]
    fn prefix_gates_know_a_leading_word_boundary_from_the_parse() {
        assert!(matches!(
            gate_of(r"(?i)\bignore\s+all"),
            Some(Gate::Prefix(_, true))
        ));
        // The boundary belongs to the first branch only.
        assert!(matches!(
            gate_of(r"\bqzxa|qzxb"),
            Some(Gate::Prefix(_, false))
        ));
        assert!(matches!(
            gate_of(r"(?:\bqzxa|qzxb)"),
            Some(Gate::Prefix(_, false))
        ));
    }

    #[test]
    fn a_later_piece_with_the_first_pieces_literals_lends_no_flag() {
        // `split_at_gate` cuts at the first `qzx`, which a word byte may precede.
        let g = gate_of(r"[a-z]+qzx\s+\bqzx");
        assert!(
            !matches!(g, Some(Gate::Inner(_, Before::Boundary))),
            "{g:?}"
        );
    }

    #[test]
    fn inner_gates_know_a_word_boundary_before_them() {
        let phone = r"(?:^|[^\w(])\(?\b[2-9]\d{2}\)?[\s.\-]\d{3}[\s.\-]\d{4}\b";
        assert!(matches!(
            gate_of(phone),
            Some(Gate::Inner(_, Before::Boundary))
        ));
        let iban = r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}";
        assert!(matches!(
            gate_of(iban),
            Some(Gate::Inner(_, Before::Letter))
        ));
        let letters_or_digits = r"\b[A-Z0-9]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}";
        assert!(matches!(
            gate_of(letters_or_digits),
            Some(Gate::Inner(_, Before::Any)) | Some(Gate::Prefix(..))
        ));
    }

    #[test]
    fn rejects_empty_matching_and_invalid_patterns() {
        assert!(parse("a*").is_err());
        assert!(parse("(a").unwrap_err().starts_with("invalid regex"));
        assert!(parse(r"\bignore\b").is_ok());
        assert!(parse("忽略").is_ok());
    }

    #[test]
    fn prefix_gates_are_match_prefixes() {
        let Some(Gate::Prefix(a, true)) = gate_of(r"\b(?:ignore|disregard)\s+all") else {
            panic!()
        };
        assert!(
            a.iter()
                .all(|l| b"ignore".starts_with(l) || b"disregard".starts_with(l)),
            "{a:?}"
        );
    }

    #[test]
    fn case_insensitive_patterns_get_lowercase_gates() {
        let Some(Gate::Prefix(a, true)) = gate_of(r"(?i)\bAccountKey=") else {
            panic!()
        };
        assert!(
            a.iter()
                .all(|l| b"accountkey=".starts_with(l) && !l.is_empty()),
            "{a:?}"
        );
    }

    #[test]
    fn the_rarest_required_piece_wins() {
        let Some(Gate::Inner(a, _)) =
            gate_of(r"\b(?:the|a)\s+(?:system\s+prompt|hidden\s+instructions)")
        else {
            panic!()
        };
        assert!(a.iter().any(|l| l.starts_with(b"system")), "{a:?}");
        let Some(Gate::Prefix(a, _)) = gate_of(r"\bignore\s+(?:\w+\s+){0,3}(?:the|your)\s+rules")
        else {
            panic!()
        };
        assert_eq!(a, vec![b"ignore".to_vec()]);
    }

    #[test]
    fn inner_gated_patterns_split_at_the_gate_piece() {
        let hir = parse(r"\b(?:the|a)\s+(?:system\s+prompt|hidden\s+instructions)").unwrap();
        let Some(Gate::Inner(lits, _)) = gate(&hir) else {
            panic!()
        };
        let (before, rest) = split_at_gate(&hir, &lits).unwrap();
        assert!(before.properties().maximum_len().is_none());
        assert_eq!(rest.properties().minimum_len(), Some("system prompt".len()));
        assert!(split_at_gate(&hir, &[b"zzz".to_vec()]).is_none());
        let ends = last_bytes(&parse(r"\b[A-Z]{2}").unwrap()).unwrap();
        assert!(ends[usize::from(b'Q')] && !ends[usize::from(b' ')] && !ends[usize::from(b'q')]);
        assert!(last_bytes(&Hir::empty()).is_none());
    }

    #[test]
    fn inner_literals_gate_patterns_that_start_with_a_class() {
        assert_eq!(
            gate_of(r"\b[a-z0-9.]{1,64}@[a-z]{2,}\.[a-z]{2,}"),
            Some(Gate::Inner(vec![b"@".to_vec()], Before::Any))
        );
        assert_eq!(gate_of(r"[a-z0-9]{20,}"), None);
    }
}
