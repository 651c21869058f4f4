//! Element types of the safetensors format.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor, spelled as in the safetensors header (`"F32"`, `"BF16"`, ...).
/// All multi-byte types are little-endian on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    /// Every dtype this crate accepts, in header spelling order.
    pub const ALL: [Dtype; 15] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// Size of one element in bytes (1, 2, 4 or 8).
    pub const fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The header spelling, e.g. `"BF16"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// True for the float types this crate converts between (F16, BF16, F32).
    pub const fn is_convertible_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }
}

impl From<Dtype> for &'static str {
    fn from(d: Dtype) -> Self {
        d.as_str()
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spelling was not one of [`Dtype::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDtype(pub String);

impl FromStr for Dtype {
    type Err = UnknownDtype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDtype(s.to_owned()))
    }
}

/// Plain-old-data element types that a byte slice of the matching [`Dtype`] can be viewed as.
///
/// # Safety
/// Implementors must be valid for every bit pattern, have no padding, and `DTYPES` must list only
/// dtypes whose element size equals `size_of::<Self>()`.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    /// The dtypes whose bytes may be viewed as `Self` (e.g. `u16` for F16 and BF16 bit patterns).
    const DTYPES: &'static [Dtype];
}

// SAFETY: primitive integers and floats are valid for every bit pattern and have no padding.
unsafe impl Element for f32 {
    const DTYPES: &'static [Dtype] = &[Dtype::F32];
}
unsafe impl Element for f64 {
    const DTYPES: &'static [Dtype] = &[Dtype::F64];
}
unsafe impl Element for u8 {
    const DTYPES: &'static [Dtype] = &[Dtype::U8, Dtype::Bool, Dtype::F8E4M3, Dtype::F8E5M2];
}
unsafe impl Element for i8 {
    const DTYPES: &'static [Dtype] = &[Dtype::I8];
}
unsafe impl Element for u16 {
    const DTYPES: &'static [Dtype] = &[Dtype::U16, Dtype::F16, Dtype::BF16];
}
unsafe impl Element for i16 {
    const DTYPES: &'static [Dtype] = &[Dtype::I16];
}
unsafe impl Element for u32 {
    const DTYPES: &'static [Dtype] = &[Dtype::U32];
}
unsafe impl Element for i32 {
    const DTYPES: &'static [Dtype] = &[Dtype::I32];
}
unsafe impl Element for u64 {
    const DTYPES: &'static [Dtype] = &[Dtype::U64];
}
unsafe impl Element for i64 {
    const DTYPES: &'static [Dtype] = &[Dtype::I64];
}
unsafe impl Element for half::f16 {
    const DTYPES: &'static [Dtype] = &[Dtype::F16];
}
unsafe impl Element for half::bf16 {
    const DTYPES: &'static [Dtype] = &[Dtype::BF16];
}

/// Why a byte slice could not be viewed as `&[T]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastError {
    WrongDtype,
    Misaligned,
    BigEndianHost,
}

/// Views `bytes` (holding `dtype` elements) as `&[T]` without copying.
pub(crate) fn cast_slice<T: Element>(dtype: Dtype, bytes: &[u8]) -> Result<&[T], CastError> {
    check_cast::<T>(dtype, bytes.as_ptr() as usize, bytes.len())?;
    // SAFETY: check_cast verified dtype/size agreement, alignment and length divisibility; T is
    // valid for any bit pattern (Element contract) and the lifetime is tied to `bytes`.
    Ok(unsafe {
        std::slice::from_raw_parts(
            bytes.as_ptr().cast::<T>(),
            bytes.len() / std::mem::size_of::<T>(),
        )
    })
}

/// Mutable counterpart of [`cast_slice`].
pub(crate) fn cast_slice_mut<T: Element>(
    dtype: Dtype,
    bytes: &mut [u8],
) -> Result<&mut [T], CastError> {
    check_cast::<T>(dtype, bytes.as_ptr() as usize, bytes.len())?;
    // SAFETY: as in cast_slice; the exclusive borrow of `bytes` moves to the returned slice.
    Ok(unsafe {
        std::slice::from_raw_parts_mut(
            bytes.as_mut_ptr().cast::<T>(),
            bytes.len() / std::mem::size_of::<T>(),
        )
    })
}

fn check_cast<T: Element>(dtype: Dtype, addr: usize, len: usize) -> Result<(), CastError> {
    let size = std::mem::size_of::<T>();
    if !T::DTYPES.contains(&dtype) || dtype.size() != size {
        return Err(CastError::WrongDtype);
    }
    // The file is little-endian; reinterpreting on a big-endian host would silently swap bytes.
    if cfg!(target_endian = "big") && size > 1 {
        return Err(CastError::BigEndianHost);
    }
    if addr % std::mem::align_of::<T>() != 0 || len % size != 0 {
        return Err(CastError::Misaligned);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_round_trips() {
        for d in Dtype::ALL {
            assert_eq!(d.as_str().parse::<Dtype>(), Ok(d));
        }
        assert!("F4".parse::<Dtype>().is_err());
    }

    #[test]
    fn cast_checks_dtype_and_alignment() {
        let words = [1.0f32, 2.0];
        // SAFETY: test-only reinterpretation of an f32 array as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 8) };
        assert_eq!(cast_slice::<f32>(Dtype::F32, bytes).unwrap(), &[1.0, 2.0]);
        assert_eq!(
            cast_slice::<f32>(Dtype::I32, bytes),
            Err(CastError::WrongDtype)
        );
        assert_eq!(
            cast_slice::<f32>(Dtype::F32, &bytes[1..5]),
            Err(CastError::Misaligned)
        );
    }
}
