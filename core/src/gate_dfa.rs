//! The gate automaton: an Aho-Corasick DFA over byte classes that reports every literal ending
//! at each position. Built here rather than taken from `aho-corasick` for three costs paid per
//! byte of every scan: the walk is one table load per byte with match states flagged in the
//! transition itself; a match state's literals are a slice lookup; and a literal can be marked
//! "word start only", so that `in` of `\bin\s+reverse` does not stop the walk inside "within".
//!
//! Word-start literals work as if the text had a marker symbol before every word byte that
//! follows a non-word byte (or starts the text): a marked literal is the marker followed by its
//! bytes, and every literal gets the marker wherever its own bytes go from non-word to word. The
//! text is never rewritten: each state knows whether the byte that led to it was a word byte
//! (its trie label; the root is split in two for that), so the marker step is folded into the
//! byte transitions when the table is built.

/// Set in a transition when the state it leads to ends at least one literal.
const MATCH: u32 = 1 << 31;

/// Class of the bytes no literal holds that are not word bytes.
const OTHER: u8 = 0;
/// Class of the word bytes no literal holds.
const OTHER_WORD: u8 = 1;
/// The marker symbol before a word byte at a word start; no byte has this class.
const MARK: u8 = 2;

/// A word byte for `\b` as the engine compiles it (Unicode off: ASCII letters, digits, `_`).
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// An Aho-Corasick DFA over a set of literals (non-empty, at most a few bytes each).
pub(crate) struct GateDfa {
    /// Byte to class: each byte some literal holds has its own class, every other byte `OTHER`
    /// or `OTHER_WORD`.
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
    /// The automaton for `literals`: non-empty byte strings, each with whether it may only
    /// match at a word start (right after a non-word byte or at the start of the text).
    pub(crate) fn new(literals: &[(&[u8], bool)]) -> Result<GateDfa, TooLarge> {
        let mut classes = [OTHER; 256];
        for (b, c) in classes.iter_mut().enumerate() {
            if is_word_byte(b as u8) {
                *c = OTHER_WORD;
            }
        }
        let mut word = vec![false, true, false];
        for (lit, _) in literals {
            for &b in *lit {
                if classes[usize::from(b)] <= MARK {
                    if word.len() == 256 {
                        return Err(TooLarge);
                    }
                    classes[usize::from(b)] = word.len() as u8;
                    word.push(is_word_byte(b));
                }
            }
        }
        let n_classes = word.len();
        let stride2 = n_classes.next_power_of_two().trailing_zeros();
        let stride = 1usize << stride2;

        // Each literal as symbols: its bytes' classes with the marker before word starts.
        let symbols: Vec<Vec<u8>> = literals
            .iter()
            .map(|&(lit, word_start)| {
                let mut out = Vec::with_capacity(lit.len() + 2);
                for (i, &b) in lit.iter().enumerate() {
                    let starts_word = if i == 0 {
                        word_start
                    } else {
                        !is_word_byte(lit[i - 1])
                    };
                    if is_word_byte(b) && starts_word {
                        out.push(MARK);
                    }
                    out.push(classes[usize::from(b)]);
                }
                out
            })
            .collect();
        let nodes = 2 + symbols.iter().map(Vec::len).sum::<usize>();
        if nodes
            .checked_mul(stride)
            .is_none_or(|n| n >= MATCH as usize)
        {
            return Err(TooLarge);
        }

        // The trie: `goto[s * stride + c]` is the child (0: none, as the root is nobody's
        // child); `label[s]` the class of the edge into `s`.
        let mut goto = vec![0u32; stride];
        let mut label = vec![OTHER];
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

        // Byte transitions, the marker step folded in. The root is reached by a non-word byte
        // and is the start; a second root, reached by a word byte, puts no marker before the
        // next word byte. States are numbered breadth first (the roots, then shallow states, are
        // where prose spends its time: their rows share cache lines), leaving out the states
        // right after a marker, which no byte leads to.
        let root_after_word = states;
        let mut id = vec![u32::MAX; states + 1];
        let mut old_of = vec![0, root_after_word];
        old_of.extend(
            order
                .iter()
                .map(|&u| u as usize)
                .filter(|&u| label[u] != MARK),
        );
        for (new, &old) in old_of.iter().enumerate() {
            id[old] = new as u32;
        }
        let mut table = vec![0u32; old_of.len() << stride2];
        for (new, &s) in old_of.iter().enumerate() {
            let (from, after_word) = if s == root_after_word {
                (0, true)
            } else {
                (s, s != 0 && word[usize::from(label[s])])
            };
            for c in (0..n_classes).filter(|&c| c != usize::from(MARK)) {
                let mut t = if word[c] && !after_word {
                    let marked = goto[from * stride + usize::from(MARK)] as usize;
                    goto[marked * stride + c] as usize
                } else {
                    goto[from * stride + c] as usize
                };
                if t == 0 && word[c] {
                    t = root_after_word;
                }
                let flag = match ends_of.get(t) {
                    Some(e) if !e.is_empty() => MATCH,
                    _ => 0,
                };
                table[(new << stride2) + c] = (id[t] << stride2) | flag;
            }
        }
        ends_of.push(Vec::new());
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
    use super::{is_word_byte, GateDfa};

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

    fn naive(literals: &[(&[u8], bool)], text: &[u8]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        for end in 1..=text.len() {
            for (i, (l, word_start)) in literals.iter().enumerate() {
                if !text[..end].ends_with(l) {
                    continue;
                }
                let start = end - l.len();
                if *word_start && start > 0 && is_word_byte(text[start - 1]) {
                    continue;
                }
                out.push((end, i as u32));
            }
        }
        out
    }

    #[test]
    fn reports_every_occurrence_like_a_naive_search() {
        let literals: &[(&[u8], bool)] = &[
            (b"he", false),
            (b"she", true),
            (b"his", true),
            (b"hers", false),
            (b"e", false),
            (b"in", true),
            (b"ing", false),
            (b"<|", false),
            (b"aaa", true),
            (b"p.s", true),
            (b" in", false),
            (b"1", true),
        ];
        for text in [
            &b"ushers and his shoe"[..],
            b"",
            b"aaaaa",
            b"sing <|im_start|> ing in within p.s. xp.s",
            b"\xff\x00hehe",
            b"Ref 35761 and 1 2 x1",
        ] {
            let dfa = GateDfa::new(literals).unwrap();
            assert_eq!(all_ends(&dfa, text), naive(literals, text), "{:?}", text);
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_naive_search(
            literals in proptest::collection::vec(("[ab1 .<]{1,4}", proptest::bool::ANY), 1..12),
            text in "[ab1 .<d_]{0,64}",
        ) {
            let lits: Vec<(&[u8], bool)> = literals
                .iter()
                .map(|(l, w)| (l.as_bytes(), *w && is_word_byte(l.as_bytes()[0])))
                .collect();
            let dfa = GateDfa::new(&lits).unwrap();
            proptest::prop_assert_eq!(all_ends(&dfa, text.as_bytes()), naive(&lits, text.as_bytes()));
        }
    }
}
