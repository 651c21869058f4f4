//! The gate automaton: an Aho-Corasick DFA over byte classes that reports every literal ending
//! at each position. Built here rather than taken from `aho-corasick` so that the walk is a
//! single table load per byte with match states flagged in the transition itself, and a match
//! state's literals are a slice lookup: the gate pass stops at a match state every few bytes of
//! prose, so both costs are paid per byte.

/// Set in a transition when the state it leads to ends at least one literal.
const MATCH: u32 = 1 << 31;

/// An Aho-Corasick DFA over a set of literals (non-empty, at most a few bytes each).
pub(crate) struct GateDfa {
    /// Byte to class: each byte some literal holds has its own class, every other byte class 0.
    classes: [u8; 256],
    /// log2 of the row length (classes rounded up to a power of two).
    stride2: u32,
    /// Row `s` at `s << stride2`; entries are premultiplied next states, `MATCH`-flagged.
    table: Vec<u32>,
    /// State `s` ends literals `ends[ends_at[s]..ends_at[s + 1]]` (indexes into the build input).
    ends_at: Vec<u32>,
    ends: Vec<u32>,
}

/// Error building the automaton: the table would not fit 31-bit state ids.
#[derive(Debug)]
pub(crate) struct TooLarge;

impl GateDfa {
    /// The automaton for `literals`, which must be non-empty byte strings.
    pub(crate) fn new(literals: &[&[u8]]) -> Result<GateDfa, TooLarge> {
        let mut classes = [0u8; 256];
        let mut n_classes = 1usize;
        for lit in literals {
            for &b in *lit {
                if classes[usize::from(b)] == 0 {
                    classes[usize::from(b)] = n_classes as u8;
                    n_classes += 1;
                    if n_classes > 255 {
                        // Every byte value used: classes are the bytes themselves.
                        for (i, c) in classes.iter_mut().enumerate() {
                            *c = i as u8;
                        }
                        n_classes = 256;
                        break;
                    }
                }
            }
            if n_classes == 256 {
                break;
            }
        }
        let stride2 = n_classes.next_power_of_two().trailing_zeros();
        let stride = 1usize << stride2;
        let nodes = 1 + literals.iter().map(|l| l.len()).sum::<usize>();
        if nodes
            .checked_mul(stride)
            .is_none_or(|n| n >= MATCH as usize)
        {
            return Err(TooLarge);
        }

        // The trie: `goto[s * stride + c]` is the child (0: none, as the root is nobody's child).
        let mut goto = vec![0u32; stride];
        let mut ends_of: Vec<Vec<u32>> = vec![Vec::new()];
        for (i, lit) in literals.iter().enumerate() {
            let mut s = 0usize;
            for &b in *lit {
                let slot = s * stride + usize::from(classes[usize::from(b)]);
                if goto[slot] == 0 {
                    goto[slot] = ends_of.len() as u32;
                    goto.resize(goto.len() + stride, 0);
                    ends_of.push(Vec::new());
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
        while let Some(u) = queue.pop_front() {
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
        // The root's missing edges already lead to the root (0). Premultiply and flag.
        let table = goto
            .iter()
            .map(|&t| {
                let flag = if ends_of[t as usize].is_empty() {
                    0
                } else {
                    MATCH
                };
                (t << stride2) | flag
            })
            .collect();
        let mut ends_at = Vec::with_capacity(states + 1);
        let mut ends = Vec::new();
        for e in &mut ends_of {
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
    pub(crate) fn start(&self) -> u32 {
        0
    }

    /// Walks `text` from `at` in `state` to the first position after which literals end: returns
    /// that position and the state there, or `text.len()` and the last state when none does.
    #[inline(never)]
    pub(crate) fn next_match(&self, text: &[u8], mut at: usize, mut state: u32) -> (usize, u32) {
        // Four bytes per bounds check of the text; the table is indexed without one (see `step`).
        while let Some(chunk) = text.get(at..at + 4) {
            for (k, &b) in chunk.iter().enumerate() {
                let next = self.step(state, b);
                state = next & !MATCH;
                if next & MATCH != 0 {
                    return (at + k + 1, next);
                }
            }
            at += 4;
        }
        while let Some(&b) = text.get(at) {
            let next = self.step(state, b);
            at += 1;
            state = next & !MATCH;
            if next & MATCH != 0 {
                return (at, next);
            }
        }
        (at, state)
    }

    /// The transition from `state` (premultiplied, unflagged) on byte `b`.
    #[inline(always)]
    fn step(&self, state: u32, b: u8) -> u32 {
        let i = (state | u32::from(self.classes[usize::from(b)])) as usize;
        debug_assert!(i < self.table.len());
        // SAFETY: `state` is 0 or came out of `table`, whose entries are (unflagged) `t << stride2`
        // for a state `t < table.len() >> stride2` (see `new`), and a class is below `1 << stride2`:
        // so `i < table.len()`. The walk is the per-byte cost of every scan; the check was a
        // fifth of it.
        unsafe { *self.table.get_unchecked(i) }
    }

    /// Whether `state` (from [`GateDfa::next_match`]) ends literals.
    pub(crate) fn is_match(state: u32) -> bool {
        state & MATCH != 0
    }

    /// The literals (indexes into the build input) that end in `state`.
    pub(crate) fn ends(&self, state: u32) -> &[u32] {
        let s = ((state & !MATCH) >> self.stride2) as usize;
        &self.ends[self.ends_at[s] as usize..self.ends_at[s + 1] as usize]
    }

    /// The state to continue from after a match state.
    pub(crate) fn resume(state: u32) -> u32 {
        state & !MATCH
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        (self.table.len() + self.ends_at.len() + self.ends.len()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::GateDfa;

    /// Every (end position, literal) the automaton reports, in order.
    fn all_ends(dfa: &GateDfa, text: &[u8]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let (mut at, mut s) = (0, dfa.start());
        loop {
            (at, s) = dfa.next_match(text, at, s);
            if !GateDfa::is_match(s) {
                return out;
            }
            out.extend(dfa.ends(s).iter().map(|&l| (at, l)));
            s = GateDfa::resume(s);
        }
    }

    fn naive(literals: &[&[u8]], text: &[u8]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        for end in 1..=text.len() {
            for (i, l) in literals.iter().enumerate() {
                if text[..end].ends_with(l) {
                    out.push((end, i as u32));
                }
            }
        }
        out
    }

    #[test]
    fn reports_every_occurrence_like_a_naive_search() {
        let literals: &[&[u8]] = &[
            b"he", b"she", b"his", b"hers", b"e", b"in", b"ing", b"<|", b"aaa",
        ];
        for text in [
            &b"ushers and his shoe"[..],
            b"",
            b"aaaaa",
            b"sing <|im_start|> ing",
            b"\xff\x00hehe",
        ] {
            let dfa = GateDfa::new(literals).unwrap();
            assert_eq!(all_ends(&dfa, text), naive(literals, text), "{:?}", text);
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_naive_search(
            literals in proptest::collection::vec("[abc<]{1,4}", 1..12),
            text in "[abcd<]{0,64}",
        ) {
            let lits: Vec<&[u8]> = literals.iter().map(|l| l.as_bytes()).collect();
            let dfa = GateDfa::new(&lits).unwrap();
            proptest::prop_assert_eq!(all_ends(&dfa, text.as_bytes()), naive(&lits, text.as_bytes()));
        }
    }
}
