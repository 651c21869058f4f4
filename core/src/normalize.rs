//! Text normalization before matching: compatibility decomposition, mark stripping, lowercase,
//! invisible-character removal and look-alike folding, each output byte mapped to the original.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::fold::{confusable, is_invisible, keep_whole, latin_variant, OneFold};
use crate::fold_table;

use crate::view::{Mapping, View};

/// State of the word being emitted, to decide look-alike folding once the word ends.
#[derive(Default)]
struct WordState {
    /// Start of the current word in the output.
    start: usize,
    has_latin: bool,
    has_other_script: bool,
    /// Output offsets of look-alike letters in this word.
    confusables: Vec<(usize, char, char)>,
}

/// Normalize `src` (a window starting at original offset `base`) into `out`.
pub(crate) fn normalize_into(src: &str, base: usize, out: &mut View) {
    normalize_with::<true>(src, base, out);
}

/// `normalize_into`, with `TABLE` false taking the general path for every non-ASCII char (the
/// reference the table is tested against).
fn normalize_with<const TABLE: bool>(src: &str, base: usize, out: &mut View) {
    if src.is_ascii() {
        out.clear(Mapping::Identity { base });
        out.text
            .extend(src.as_bytes().iter().map(|b| b.to_ascii_lowercase()));
        return;
    }
    out.clear(Mapping::Table { base });
    out.text.reserve(src.len());
    out.spans.reserve(src.len());
    let mut word = WordState::default();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii() && word.confusables.is_empty() {
            i = push_ascii_run(bytes, i, out, &mut word);
            continue;
        }
        if TABLE {
            let end = kept_whole_run(bytes, i);
            if end > i {
                push_kept_run(out, bytes, i, end);
                word.has_other_script = true;
                i = end;
                continue;
            }
        }
        let Some(c) = src[i..].chars().next() else {
            break;
        };
        let from = i as u32;
        i += c.len_utf8();
        let to = i as u32;
        if c.is_ascii() {
            let lc = c.to_ascii_lowercase();
            if lc.is_ascii_alphanumeric() {
                word.has_latin |= lc.is_ascii_alphabetic();
            } else {
                end_word(out, &mut word);
            }
            out.text.push(lc as u8);
            out.spans.push((from, to));
            continue;
        }
        if kept_as_is(c) {
            word.has_other_script = true;
            out.push_char(c, from, to);
            continue;
        }
        if TABLE {
            match fold_table::lookup(c) {
                OneFold::Slow => {}
                OneFold::Drop => continue,
                OneFold::Word { out: l, ascii } => {
                    word.has_latin |= ascii;
                    word.has_other_script |= !ascii;
                    out.push_char(l, from, to);
                    continue;
                }
                OneFold::Break(l) => {
                    end_word(out, &mut word);
                    out.push_char(l, from, to);
                    continue;
                }
            }
        }
        if is_invisible(c) {
            continue;
        }
        if let Some(ascii) = confusable(c) {
            word.confusables.push((out.text.len(), c, ascii));
            // Emitted lowercased for now; `end_word` replaces it if the word mixes scripts.
            for l in c.to_lowercase() {
                out.push_char(l, from, to);
            }
            continue;
        }
        decompose_compatible(c, |d| {
            if is_combining_mark(d) {
                return;
            }
            let d = latin_variant(d).unwrap_or(d);
            if d.is_alphanumeric() {
                if d.is_ascii() {
                    word.has_latin = true;
                } else {
                    word.has_other_script = true;
                }
            } else {
                end_word(out, &mut word);
            }
            for l in d.to_lowercase() {
                out.push_char(l, from, to);
            }
        });
    }
    end_word(out, &mut word);
}

/// Copy the ASCII run of `bytes` at `from` lowercased, one span per byte, and return where it ends.
/// Equivalent to the per-char loop while the current word holds no look-alike: then closing a word
/// only resets its state, so only the run's last word matters.
fn push_ascii_run(bytes: &[u8], from: usize, out: &mut View, word: &mut WordState) -> usize {
    let end = crate::engine::next_non_ascii(bytes, from).unwrap_or(bytes.len());
    let run = &bytes[from..end];
    let out_start = out.text.len();
    // Copied, then lowercased in place: a loop over a slice vectorizes, a mapped `extend` not.
    out.text.extend_from_slice(run);
    out.text[out_start..].make_ascii_lowercase();
    out.spans
        .extend((from as u32..end as u32).map(|k| (k, k + 1)));
    match run.iter().rposition(|b| !b.is_ascii_alphanumeric()) {
        Some(last) => {
            word.has_latin = run[last + 1..].iter().any(u8::is_ascii_alphabetic);
            word.has_other_script = false;
            word.start = out_start + last;
        }
        None => word.has_latin |= run.iter().any(u8::is_ascii_alphabetic),
    }
    end
}

/// CJK unified ideographs and Hangul syllables: letters without decomposition or case, neither
/// invisible nor look-alikes, which normalization keeps as they are (the bulk of CJK and Korean
/// prose; the same result as the general path, without its lookups).
fn kept_as_is(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c) || keep_whole(c)
}

/// End of the run of [`kept_as_is`] chars at `from`.
fn kept_whole_run(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(&[b0, b1, b2]) = bytes.get(i..i + 3) {
        // Lead bytes E4..=ED hold U+4000..=U+DFFF, which contains both ranges.
        if !(0xE4..=0xED).contains(&b0) {
            break;
        }
        let c = crate::engine::three_byte_char(b0, b1, b2);
        if !char::from_u32(c as u32).is_some_and(kept_as_is) {
            break;
        }
        i += 3;
    }
    i
}

/// Copy the kept-whole run `bytes[from..to]` (three-byte chars), each byte mapped to its char.
fn push_kept_run(out: &mut View, bytes: &[u8], from: usize, to: usize) {
    out.text.extend_from_slice(&bytes[from..to]);
    out.spans.reserve(to - from);
    for k in (from as u32..to as u32).step_by(3) {
        out.spans.extend_from_slice(&[(k, k + 3); 3]);
    }
}

/// Close the current word: fold its look-alikes if it mixes Latin with them, or consists only of them.
fn end_word(out: &mut View, word: &mut WordState) {
    if !word.confusables.is_empty() && (word.has_latin || !word.has_other_script) {
        fold_confusables(out, word);
    }
    word.confusables.clear();
    word.has_latin = false;
    word.has_other_script = false;
    word.start = out.text.len();
}

fn fold_confusables(out: &mut View, word: &WordState) {
    let tail_text = out.text.split_off(word.start);
    let tail_spans = out.spans.split_off(word.start);
    let mut pending = word.confusables.iter().peekable();
    let mut i = 0;
    while i < tail_text.len() {
        let at = word.start + i;
        let ch_len = utf8_len(tail_text[i]);
        match pending.peek() {
            Some(&&(pos, orig, ascii)) if pos == at => {
                pending.next();
                let lower_len: usize = orig.to_lowercase().map(char::len_utf8).sum();
                out.text.push(ascii as u8);
                out.spans.push(tail_spans[i]);
                i += lower_len;
            }
            _ => {
                out.text.extend_from_slice(&tail_text[i..i + ch_len]);
                out.spans.extend_from_slice(&tail_spans[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> (String, View) {
        let mut v = View::default();
        normalize_into(s, 0, &mut v);
        (v.as_str().to_string(), v)
    }

    #[test]
    fn ascii_is_lowercased_with_identity_map() {
        let (t, v) = norm("Ignore ALL");
        assert_eq!(t, "ignore all");
        assert_eq!(v.original(0, 6).start, 0);
        assert_eq!(v.original(7, 10).end, 10);
    }

    #[test]
    fn fullwidth_accents_and_invisibles_fold() {
        assert_eq!(norm("Ｉｇｎｏｒｅ").0, "ignore");
        assert_eq!(norm("précédentes").0, "precedentes");
        assert_eq!(norm("ig\u{200B}no\u{E0041}re").0, "ignore");
        assert_eq!(norm("İGNORE").0, "ignore");
        assert_eq!(norm("ıgnore").0, "ignore");
    }

    #[test]
    fn lookalikes_fold_only_in_mixed_words() {
        // Cyrillic о and е inside a Latin word.
        assert_eq!(norm("ign\u{043E}r\u{0435} this").0, "ignore this");
        // Ordinary Russian stays Russian.
        // Marks are stripped everywhere (й reads и); rule text is folded the same way.
        assert_eq!(norm("Игнорируй инструкции").0, "игнорируи инструкции");
    }

    #[test]
    fn spans_map_to_original_char_boundaries() {
        let src = "Ｉｇｎｏｒｅ me";
        let (t, v) = norm(src);
        let s = t.find("ignore").unwrap();
        let span = v.original(s, s + 6);
        assert_eq!(&src[span.start..span.end], "Ｉｇｎｏｒｅ");
        let m = t.find("me").unwrap();
        let span = v.original(m, m + 2);
        assert_eq!(&src[span.start..span.end], "me");
    }

    #[test]
    fn table_path_equals_general_path() {
        let chars = crate::fold_table::FOLD_RANGES
            .iter()
            .flat_map(|&(lo, hi, _)| lo..hi)
            .filter_map(char::from_u32);
        for c in chars {
            for text in [
                format!("{c}"),
                format!("a{c}b {c}1"),
                format!("x\u{0430}{c}y z"),
                format!("\u{0430}{c}\u{043E} {c}{c}"),
                format!("Ж{c}p. {c}\u{0435}"),
                format!("{c}我们{c}한국어{c}\u{9FFF}\u{A000}"),
            ] {
                let (mut fast, mut slow) = (View::default(), View::default());
                normalize_with::<true>(&text, 3, &mut fast);
                normalize_with::<false>(&text, 3, &mut slow);
                assert_eq!(fast.text, slow.text, "{text:?}");
                assert_eq!(fast.spans, slow.spans, "{text:?}");
            }
        }
    }

    #[test]
    fn fold_str_matches_view_for_literals() {
        assert_eq!(crate::fold::fold_str("Précédentes Ｘ"), "precedentes x");
    }
}
