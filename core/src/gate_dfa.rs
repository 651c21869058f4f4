//! The gate automaton: an Aho-Corasick DFA over byte classes that reports every literal ending
//! at each position. Built here rather than taken from `aho-corasick` for three costs paid per
//! byte of every scan: the walk is one table load per byte with match states flagged in the
//! transition itself; a match state's literals are a slice lookup; and a literal can be marked
//! "word start only" or "after a letter only", so that `in` of `\bin\s+reverse` does not stop
//! the walk inside "within", nor `35` of `[A-Z]{2}\d{2}` inside "35761".
//!
//! Marked literals work as if the text had a marker symbol before every word byte that follows
//! a non-word byte (or starts the text), and another before every digit that follows a letter: a
//! marked literal is its marker followed by its bytes, and every literal gets the markers
//! wherever its own bytes call for them. The text is never rewritten: each state knows the kind
//! of the byte that led to it (its trie label; the root is split in three for that), so the
//! marker steps are folded into the byte transitions when the table is built.

/// Set in a transition when the state it leads to ends at least one literal.
const MATCH: u32 = 1 << 31;

/// Where a literal may occur, by the byte before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Context {
    /// Anywhere.
    Any,
    /// Only at a word start: after a non-word byte or at the start of the text (a literal that
    /// starts with a word byte).
    WordStart,
    /// Only right after an ASCII letter (a literal that starts with a digit: the `\d{2}` of
    /// `[A-Z]{2}\d{2}`, which would otherwise fire inside every number). Never at the start of
    /// the text: sound while every text searched is the one whose hits drive the check (a match
    /// needs its letter inside it), as for windows and views today.
    AfterLetter,
}

/// What the byte before a position is, as far as [`Context`] cares.
const NON_WORD: u8 = 0;
const LETTER: u8 = 1;
/// A digit or `_`.
const OTHER_WORD: u8 = 2;

fn kind(b: u8) -> u8 {
    if b.is_ascii_alphabetic() {
        LETTER
    } else if is_word_byte(b) {
        OTHER_WORD
    } else {
        NON_WORD
    }
}

/// A word byte for `\b` as the engine compiles it (Unicode off: ASCII letters, digits, `_`).
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// An Aho-Corasick DFA over a set of literals (non-empty, at most a few bytes each).
pub(crate) struct GateDfa {
    /// Byte to class: each byte some literal holds has its own class, the others one per group
    /// of bytes alike for the markers (non-word, letter, digit, `_`).
    classes: [u8; 256],
    /// log2 of the row length (classes rounded up to a power of two).
    stride2: u32,
    /// Row `s` at `s << stride2`; entries are premultiplied next states, `MATCH`-flagged.
    table: Vec<u32>,
    /// State `s` ends literals `ends[ends_at[s]..ends_at[s + 1]]` (indexes into the build input).
    ends_at: Vec<u32>,
    ends: Vec<u32>,
}

/// A state of the walk: its row's offset in the table (premultiplied), flagged (`MATCH`) when
/// it ends literals. Only the automaton makes them, so a state is always a row of its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GateState(u32);

/// Error building the automaton: the table would not fit 31-bit state ids.
#[derive(Debug)]
pub(crate) struct TooLarge;

impl GateDfa {
    /// The automaton for `literals`: non-empty byte strings, each with where it may occur.
    pub(crate) fn new(literals: &[(&[u8], Context)]) -> Result<GateDfa, TooLarge> {
        // Byte classes: each byte some literal holds has its own; the others share one per
        // (kind, digit) group, so the marker rules below hold for a whole class alike.
        const UNSET: u8 = u8::MAX;
        let mut classes = [UNSET; 256];
        let mut members: Vec<u8> = Vec::new();
        for (lit, _) in literals {
            for &b in *lit {
                if classes[usize::from(b)] == UNSET {
                    if members.len() == 250 {
                        return Err(TooLarge);
                    }
                    classes[usize::from(b)] = members.len() as u8;
                    members.push(b);
                }
            }
        }
        let group = |b: u8| (kind(b), b.is_ascii_digit());
        let mut groups: Vec<((u8, bool), u8)> = Vec::new();
        for b in 0..=255u8 {
            if classes[usize::from(b)] != UNSET {
                continue;
            }
            let class = match groups.iter().find(|(g, _)| *g == group(b)) {
                Some(&(_, c)) => c,
                None => {
                    let c = members.len() as u8;
                    members.push(b);
                    groups.push((group(b), c));
                    c
                }
            };
            classes[usize::from(b)] = class;
        }
        // A class's properties are its first member's (all its members share them).
        let word: Vec<bool> = members.iter().map(|&b| is_word_byte(b)).collect();
        let letter: Vec<bool> = members.iter().map(|&b| b.is_ascii_alphabetic()).collect();
        let digit: Vec<bool> = members.iter().map(|&b| b.is_ascii_digit()).collect();
        let n_classes = members.len();
        // The markers are symbols of the trie only: no byte has their class.
        let (mark, mark_letter) = (n_classes as u8, n_classes as u8 + 1);
        // The trie's rows hold the byte classes and the two markers; it is a build-time table
        // (not a power of two: its size is the scan's peak memory, the walk never reads it).
        let stride = n_classes + 2;
        let stride2 = n_classes.next_power_of_two().trailing_zeros();

        // Each literal as symbols: its bytes' classes, with `mark` before a word byte after a
        // non-word byte and `mark_letter` before a digit after a letter, the literal's first
        // byte marked by its context.
        let symbols: Vec<Vec<u8>> = literals
            .iter()
            .map(|&(lit, context)| {
                let mut out = Vec::with_capacity(lit.len() + 2);
                for (i, &b) in lit.iter().enumerate() {
                    let before = if i == 0 {
                        match context {
                            Context::Any => None,
                            Context::WordStart => Some(NON_WORD),
                            Context::AfterLetter => Some(LETTER),
                        }
                    } else {
                        Some(kind(lit[i - 1]))
                    };
                    if is_word_byte(b) && before == Some(NON_WORD) {
                        out.push(mark);
                    } else if b.is_ascii_digit() && before == Some(LETTER) {
                        out.push(mark_letter);
                    }
                    out.push(classes[usize::from(b)]);
                }
                out
            })
            .collect();
        let nodes = 3 + symbols.iter().map(Vec::len).sum::<usize>();
        if nodes >= (MATCH >> stride2) as usize || nodes.checked_mul(stride).is_none() {
            return Err(TooLarge);
        }

        // The trie: `goto[s * stride + c]` is the child (0: none, as the root is nobody's
        // child); `label[s]` the class of the edge into `s`.
        let mut goto = vec![0u32; stride];
        let mut label = vec![0u8];
        let mut ends_of: Vec<Vec<u32>> = vec![Vec::new()];
        for (i, lit) in symbols.iter().enumerate() {
            let mut s = 0usize;
            for &c in lit {
                let slot = s * stride + usize::from(c);
                if goto[slot] == 0 {
                    goto[slot] = ends_of.len() as u32;
                    goto.resize(goto.len() + stride, 0);
                    ends_of.push(Vec::new());
                    label.push(c);
                }
                s = goto[slot] as usize;
            }
            ends_of[s].push(i as u32);
        }
        let states = ends_of.len();

        // Breadth first, so a state's failure state is complete before the state: missing edges
        // take the failure state's, and a state ends the literals its failure state ends.
        let mut fail = vec![0u32; states];
        let mut queue = std::collections::VecDeque::new();
        queue.extend(goto[..stride].iter().copied().filter(|&child| child != 0));
        let mut order = Vec::with_capacity(states);
        while let Some(u) = queue.pop_front() {
            order.push(u);
            let u = u as usize;
            let f = fail[u] as usize;
            let inherited = ends_of[f].clone();
            ends_of[u].extend(inherited);
            for c in 0..stride {
                let child = goto[u * stride + c];
                let via_fail = goto[f * stride + c];
                if child != 0 {
                    fail[child as usize] = via_fail;
                    queue.push_back(child);
                } else {
                    goto[u * stride + c] = via_fail;
                }
            }
        }

        // Byte transitions, the marker steps folded in. Each state knows the kind of the byte
        // that led to it (its label), except the root: it is split in three, by the kind of the
        // byte that led back to it; the plain root (after a non-word byte) is the start. States
        // are numbered breadth first (the roots, then shallow states, are where prose spends its
        // time: their rows share cache lines), leaving out the states right after a marker,
        // which no byte leads to.
        let (root_letter, root_word) = (states, states + 1);
        let root_of = |c: usize| match (word[c], letter[c]) {
            (false, _) => 0,
            (true, true) => root_letter,
            (true, false) => root_word,
        };
        let mut id = vec![u32::MAX; states + 2];
        let mut old_of = vec![0, root_letter, root_word];
        old_of.extend(
            order
                .iter()
                .map(|&u| u as usize)
                .filter(|&u| label[u] != mark && label[u] != mark_letter),
        );
        for (new, &old) in old_of.iter().enumerate() {
            id[old] = new as u32;
        }
        let mut table = vec![0u32; old_of.len() << stride2];
        for (new, &s) in old_of.iter().enumerate() {
            let (from, before) = match s {
                _ if s == root_letter => (0, LETTER),
                _ if s == root_word => (0, OTHER_WORD),
                0 => (0, NON_WORD),
                _ => (s, kind(members[usize::from(label[s])])),
            };
            let via = |m: u8| goto[from * stride + usize::from(m)] as usize;
            for c in 0..n_classes {
                let mut t = if word[c] && before == NON_WORD {
                    goto[via(mark) * stride + c] as usize
                } else if digit[c] && before == LETTER {
                    goto[via(mark_letter) * stride + c] as usize
                } else {
                    goto[from * stride + c] as usize
                };
                if t == 0 {
                    t = root_of(c);
                }
                let flag = match ends_of.get(t) {
                    Some(e) if !e.is_empty() => MATCH,
                    _ => 0,
                };
                table[(new << stride2) + c] = (id[t] << stride2) | flag;
            }
        }
        ends_of.extend([Vec::new(), Vec::new()]);
        let mut ends_at = Vec::with_capacity(old_of.len() + 1);
        let mut ends = Vec::new();
        for &old in &old_of {
            let e = &mut ends_of[old];
            ends_at.push(ends.len() as u32);
            e.sort_unstable();
            e.dedup();
            ends.extend_from_slice(e);
        }
        ends_at.push(ends.len() as u32);
        Ok(GateDfa {
            classes,
            stride2,
            table,
            ends_at,
            ends,
        })
    }

    /// The state before any text.
    pub(crate) fn start(&self) -> GateState {
        GateState(0)
    }

    /// Walks `text` from `at` in `state` to the first position after which literals end: returns
    /// that position and the state there, or `text.len()` and the last state when none does.
    #[inline(never)]
    pub(crate) fn next_match(
        &self,
        text: &[u8],
        mut at: usize,
        state: GateState,
    ) -> (usize, GateState) {
        let mut state = state.0 & !MATCH;
        // A state of another automaton would break `step`'s argument: once per call, not per byte.
        assert!(
            (state as usize) < self.table.len(),
            "a state of another automaton"
        );
        // Four bytes per bounds check of the text; the table is indexed without one (see `step`).
        while let Some(chunk) = text.get(at..at + 4) {
            for (k, &b) in chunk.iter().enumerate() {
                let next = self.step(state, b);
                state = next & !MATCH;
                if next & MATCH != 0 {
                    return (at + k + 1, GateState(next));
                }
            }
            at += 4;
        }
        while let Some(&b) = text.get(at) {
            let next = self.step(state, b);
            at += 1;
            state = next & !MATCH;
            if next & MATCH != 0 {
                return (at, GateState(next));
            }
        }
        (at, GateState(state))
    }

    /// [`GateDfa::next_match`] for two walks at once, `a` over `ta` and `b` over `tb`, in
    /// lockstep: each step waits on the table load of the one before, so two independent walks
    /// take about the time of one. Returns both walks' positions and states when either reaches
    /// a position after which literals end (its state flagged, the other's as it stands), or
    /// when either text ends.
    #[inline(never)]
    pub(crate) fn next_match2(
        &self,
        ta: &[u8],
        a: (usize, GateState),
        tb: &[u8],
        b: (usize, GateState),
    ) -> ((usize, GateState), (usize, GateState)) {
        let (mut sa, mut sb) = (a.1 .0 & !MATCH, b.1 .0 & !MATCH);
        assert!(
            (sa as usize) < self.table.len() && (sb as usize) < self.table.len(),
            "a state of another automaton"
        );
        let steps = (ta.len().saturating_sub(a.0)).min(tb.len().saturating_sub(b.0));
        let (ta, tb) = (&ta[a.0..a.0 + steps], &tb[b.0..b.0 + steps]);
        for k in 0..steps {
            let na = self.step(sa, ta[k]);
            let nb = self.step(sb, tb[k]);
            sa = na & !MATCH;
            sb = nb & !MATCH;
            if (na | nb) & MATCH != 0 {
                return ((a.0 + k + 1, GateState(na)), (b.0 + k + 1, GateState(nb)));
            }
        }
        ((a.0 + steps, GateState(sa)), (b.0 + steps, GateState(sb)))
    }

    /// The transition from `state` (a premultiplied row, unflagged) on byte `b`.
    #[inline(always)]
    fn step(&self, state: u32, b: u8) -> u32 {
        let i = (state | u32::from(self.classes[usize::from(b)])) as usize;
        debug_assert!(i < self.table.len());
        // SAFETY: `state` is a row of `table`: the start (0), or taken from a `GateState`, which
        // only this automaton makes, from table entries, whose rows are all `t << stride2` with
        // `t < table.len() >> stride2` (see `new`); a class is below `1 << stride2`. So
        // `i < table.len()`. The walk is the per-byte cost of every scan; the check was a fifth.
        unsafe { *self.table.get_unchecked(i) }
    }

    /// Whether `state` (from [`GateDfa::next_match`]) ends literals.
    pub(crate) fn is_match(state: GateState) -> bool {
        state.0 & MATCH != 0
    }

    /// The literals (indexes into the build input) that end in `state`.
    pub(crate) fn ends(&self, state: GateState) -> &[u32] {
        let s = ((state.0 & !MATCH) >> self.stride2) as usize;
        &self.ends[self.ends_at[s] as usize..self.ends_at[s + 1] as usize]
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        (self.table.len() + self.ends_at.len() + self.ends.len()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::{is_word_byte, Context, GateDfa};

    /// Every (end position, literal) the automaton reports from `from`, in order.
    fn all_ends(dfa: &GateDfa, text: &[u8]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let (mut at, mut s) = (0, dfa.start());
        loop {
            (at, s) = dfa.next_match(text, at, s);
            if !GateDfa::is_match(s) {
                return out;
            }
            out.extend(dfa.ends(s).iter().map(|&l| (at, l)));
        }
    }

    fn naive(literals: &[(&[u8], Context)], text: &[u8]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        for end in 1..=text.len() {
            for (i, (l, context)) in literals.iter().enumerate() {
                if !text[..end].ends_with(l) {
                    continue;
                }
                let before = (end > l.len()).then(|| text[end - l.len() - 1]);
                let fits = match context {
                    Context::Any => true,
                    Context::WordStart => before.is_none_or(|b| !is_word_byte(b)),
                    Context::AfterLetter => before.is_some_and(|b| b.is_ascii_alphabetic()),
                };
                if fits {
                    out.push((end, i as u32));
                }
            }
        }
        out
    }

    #[test]
    fn reports_every_occurrence_like_a_naive_search() {
        use Context::{AfterLetter, Any, WordStart};
        let literals: &[(&[u8], Context)] = &[
            (b"he", Any),
            (b"she", WordStart),
            (b"his", WordStart),
            (b"hers", Any),
            (b"e", Any),
            (b"in", WordStart),
            (b"ing", Any),
            (b"<|", Any),
            (b"aaa", WordStart),
            (b"p.s", WordStart),
            (b" in", Any),
            (b"1", WordStart),
            (b"35", AfterLetter),
            (b"57", Any),
            (b"a3", Any),
            (b"61", WordStart),
        ];
        for text in [
            &b"ushers and his shoe"[..],
            b"",
            b"aaaaa",
            b"sing <|im_start|> ing in within p.s. xp.s",
            b"\xff\x00hehe",
            b"Ref 35761 and 1 2 x1 GB35 gb357 _35 a3561",
        ] {
            let dfa = GateDfa::new(literals).unwrap();
            assert_eq!(all_ends(&dfa, text), naive(literals, text), "{:?}", text);
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_naive_search(
            literals in proptest::collection::vec(("[ab12 .<_]{1,4}", 0..3u8), 1..12),
            text in "[ab12 .<d_C9]{0,64}",
        ) {
            // Contexts as the engine gives them: word start for a word byte, after a letter for
            // a digit; anything else is `Any`.
            let lits: Vec<(&[u8], Context)> = literals
                .iter()
                .map(|(l, c)| {
                    let b = l.as_bytes()[0];
                    let context = match c {
                        1 if is_word_byte(b) => Context::WordStart,
                        2 if b.is_ascii_digit() => Context::AfterLetter,
                        _ => Context::Any,
                    };
                    (l.as_bytes(), context)
                })
                .collect();
            let dfa = GateDfa::new(&lits).unwrap();
            proptest::prop_assert_eq!(all_ends(&dfa, text.as_bytes()), naive(&lits, text.as_bytes()));
        }
    }
}
