//! [`fold_one`](crate::fold::fold_one) precomputed by the build script for the non-ASCII chars
//! common in prose, so that normalizing them costs a table load instead of a decomposition.

use crate::fold::OneFold;

include!(concat!(env!("OUT_DIR"), "/fold_table.rs"));

/// The precomputed [`fold_one`](crate::fold::fold_one) of `c`, `Slow` outside the table.
#[inline]
pub(crate) fn lookup(c: char) -> OneFold {
    let cp = c as u32;
    let Some(&(lo, _, at)) = FOLD_RANGES
        .iter()
        .find(|&&(lo, hi, _)| (lo..hi).contains(&cp))
    else {
        return OneFold::Slow;
    };
    let entry = FOLD_TABLE[at + (cp - lo) as usize];
    // Entries are built from chars, so the low bits always hold one.
    let out = char::from_u32(entry & 0x1F_FFFF).unwrap_or('\0');
    match entry >> 24 {
        1 => OneFold::Drop,
        2 => OneFold::Word { out, ascii: true },
        3 => OneFold::Word { out, ascii: false },
        4 => OneFold::Break(out),
        _ => OneFold::Slow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold_one;

    #[test]
    fn table_is_fold_one_over_its_ranges() {
        for &(lo, hi, _) in &FOLD_RANGES {
            for c in (lo..hi).filter_map(char::from_u32) {
                assert_eq!(lookup(c), fold_one(c), "{c:?} U+{:04X}", c as u32);
            }
        }
        assert_eq!(lookup('\u{4E00}'), OneFold::Slow);
        assert_eq!(
            lookup('é'),
            OneFold::Word {
                out: 'e',
                ascii: true
            }
        );
        assert_eq!(
            lookup('Ж'),
            OneFold::Word {
                out: 'ж',
                ascii: false
            }
        );
        assert_eq!(lookup('\u{00AD}'), OneFold::Drop);
        assert_eq!(lookup('，'), OneFold::Break(','));
        assert_eq!(lookup('о'), OneFold::Slow, "look-alikes depend on the word");
    }
}
