//! Per-character folding shared by the normalizer, rule compilation and the build script:
//! which characters are invisible, which letters read as which ASCII letters.
//! Depends only on `unicode-normalization` so `build.rs` can include it.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Characters that render as nothing (or as a format control) and are used to split or hide words.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Latin look-alikes of Cyrillic and Greek letters (both cases), folded inside mixed-script words.
pub(crate) fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'А' | 'α' | 'Α' => 'a',
        'В' | 'β' | 'Β' => 'b',
        'с' | 'С' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'Е' | 'ε' | 'Ε' | 'ё' => 'e',
        'ɡ' => 'g',
        'һ' | 'Н' | 'Η' => 'h',
        'і' | 'І' | 'ї' | 'ι' | 'Ι' | 'ӏ' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' | 'κ' | 'Κ' => 'k',
        'М' | 'Μ' => 'm',
        'Ν' | 'η' => 'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' | 'Ѕ' => 's',
        'Т' | 'τ' | 'Τ' => 't',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'у' | 'У' | 'γ' | 'Υ' => 'y',
        'Ζ' => 'z',
        _ => return None,
    })
}

/// Latin letters that compatibility decomposition leaves alone but that read as plain ASCII letters.
pub(crate) fn latin_variant(c: char) -> Option<char> {
    Some(match c {
        'ı' => 'i',
        'ȷ' => 'j',
        'ɑ' => 'a',
        'ł' | 'Ł' => 'l',
        'ø' | 'Ø' => 'o',
        'đ' | 'Đ' => 'd',
        'ß' => 's',
        _ => return None,
    })
}

/// Hangul syllables decompose into jamo under NFKD; keep them whole so Korean rules stay readable.
pub(crate) fn keep_whole(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// What the normalized view makes of one non-ASCII char when that is at most one char: the
/// normalizer's table-driven fast path (`fold_table`) for common accented, Cyrillic, Greek and
/// full-width text. Anything else (look-alikes, which depend on the word, and multi-char results)
/// is `Slow`: the normalizer takes its general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OneFold {
    /// Needs the general path.
    Slow,
    /// Leaves nothing and does not end the word (invisible, or only combining marks).
    Drop,
    /// A letter or digit, lowercased; `ascii` when it folded to ASCII (the word counts as Latin).
    Word { out: char, ascii: bool },
    /// Any other char: it ends the current word, then is kept (lowercased).
    Break(char),
}

/// The fold of a non-ASCII `c` outside look-alike folding, as [`OneFold`].
// The build script tabulates it (`fold_table`); the library reads the table, tests check both.
#[cfg_attr(not(test), allow(dead_code))]
pub fn fold_one(c: char) -> OneFold {
    if c.is_ascii() || keep_whole(c) {
        return OneFold::Slow;
    }
    if is_invisible(c) {
        return OneFold::Drop;
    }
    if confusable(c).is_some() {
        return OneFold::Slow;
    }
    let mut kept = Vec::new();
    decompose_compatible(c, |d| {
        if !is_combining_mark(d) {
            kept.push(latin_variant(d).unwrap_or(d));
        }
    });
    let d = match kept[..] {
        [] => return OneFold::Drop,
        [d] => d,
        _ => return OneFold::Slow,
    };
    let mut lower = d.to_lowercase();
    let (Some(out), None) = (lower.next(), lower.next()) else {
        return OneFold::Slow;
    };
    if d.is_alphanumeric() {
        OneFold::Word {
            out,
            ascii: d.is_ascii(),
        }
    } else {
        OneFold::Break(out)
    }
}

/// Normalize one char as the normalized view does, without word context (used for rule literals).
pub fn fold_char(c: char, mut emit: impl FnMut(char)) {
    if is_invisible(c) {
        return;
    }
    if c.is_ascii() {
        emit(c.to_ascii_lowercase());
        return;
    }
    if keep_whole(c) {
        emit(c);
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) {
            return;
        }
        let d = latin_variant(d).unwrap_or(d);
        for l in d.to_lowercase() {
            emit(l);
        }
    });
}

/// Normalize a string char by char (no word context); used for literals and non-ASCII pattern text.
pub fn fold_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        fold_char(c, |d| out.push(d));
    }
    out
}

/// A pattern's non-ASCII literal characters folded like the normalized view folds text; folded
/// ASCII punctuation is escaped so `＊` stays a literal.
pub fn fold_pattern(pattern: &str) -> String {
    if pattern.is_ascii() {
        return pattern.to_string();
    }
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            fold_char(c, |d| {
                if d.is_ascii_punctuation() {
                    out.push('\\');
                }
                out.push(d);
            });
        }
    }
    out
}
