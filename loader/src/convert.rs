//! Copying and converting tensor bytes between F16, BF16 and F32.
//!
//! Sources are little-endian file bytes with no alignment guarantee; destinations are aligned
//! for their element type (the materialization arena is 64-byte aligned). Converted values are
//! written in host order, which is the file order on the little-endian hosts typed access
//! supports.

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};

use crate::dtype::cast_slice_mut;
use crate::Dtype;

/// Elements converted per staging block: small enough to stay in L1/L2.
const BLOCK: usize = 4096;

/// True when [`convert`] supports `from -> to`.
pub(crate) fn supported(from: Dtype, to: Dtype) -> bool {
    from == to || (from.is_convertible_float() && to.is_convertible_float())
}

/// Writes `src` (elements of `from`) into `dst` as `to`. The caller guarantees
/// `supported(from, to)`, matching element counts, and that `dst` is aligned for `to`.
pub(crate) fn convert(src: &[u8], from: Dtype, dst: &mut [u8], to: Dtype) {
    debug_assert_eq!(src.len() / from.size(), dst.len() / to.size());
    if from == to {
        dst.copy_from_slice(src);
        return;
    }
    match (from, to) {
        (Dtype::BF16, Dtype::F32) => {
            let out = typed::<f32>(to, dst);
            for (d, s) in out.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits(u32::from(u16::from_le_bytes([s[0], s[1]])) << 16);
            }
        }
        _ => convert_staged(src, from, dst, to),
    }
}

/// Every other pair goes through an aligned f32 staging block, so the SIMD slice conversions
/// of `half` can run regardless of source alignment.
fn convert_staged(src: &[u8], from: Dtype, dst: &mut [u8], to: Dtype) {
    let mut stage = [0f32; BLOCK];
    let mut bits = [0u16; BLOCK];
    let (ssize, dsize) = (from.size(), to.size());
    for (s, d) in src.chunks(BLOCK * ssize).zip(dst.chunks_mut(BLOCK * dsize)) {
        let n = s.len() / ssize;
        let stage = &mut stage[..n];
        match from {
            Dtype::F32 => {
                for (x, b) in stage.iter_mut().zip(s.chunks_exact(4)) {
                    *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 | Dtype::BF16 => {
                let bits = &mut bits[..n];
                for (x, b) in bits.iter_mut().zip(s.chunks_exact(2)) {
                    *x = u16::from_le_bytes([b[0], b[1]]);
                }
                if from == Dtype::F16 {
                    bits.reinterpret_cast::<f16>().convert_to_f32_slice(stage);
                } else {
                    bits.reinterpret_cast::<bf16>().convert_to_f32_slice(stage);
                }
            }
            _ => unreachable_pair(from, to),
        }
        match to {
            Dtype::F32 => typed::<f32>(to, d).copy_from_slice(stage),
            Dtype::F16 => typed::<f16>(to, d).convert_from_f32_slice(stage),
            Dtype::BF16 => typed::<bf16>(to, d).convert_from_f32_slice(stage),
            _ => unreachable_pair(from, to),
        }
    }
}

fn typed<T: crate::Element>(dtype: Dtype, bytes: &mut [u8]) -> &mut [T] {
    match cast_slice_mut::<T>(dtype, bytes) {
        Ok(s) => s,
        // The arena is 64-byte aligned and chunk offsets are element multiples, so this is a
        // bug in this crate, not bad input.
        Err(e) => panic!("internal: destination not castable for {dtype}: {e:?}"),
    }
}

#[cold]
fn unreachable_pair(from: Dtype, to: Dtype) -> ! {
    panic!("internal: conversion {from} -> {to} was not rejected up front")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[repr(align(64))]
    struct Aligned([u8; 64]);

    #[test]
    fn round_trips_through_half_types() {
        let vals = [0.0f32, -1.5, 65504.0, 1e-3, f32::INFINITY, 3.0];
        for mid in [Dtype::BF16, Dtype::F16] {
            let src = f32_bytes(&vals);
            let mut halfbuf = Aligned([0; 64]);
            convert(&src, Dtype::F32, &mut halfbuf.0[..12], mid);
            let mut back = Aligned([0; 64]);
            convert(&halfbuf.0[..12], mid, &mut back.0[..24], Dtype::F32);
            let got: Vec<f32> = back.0[..24]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            for (g, v) in got.iter().zip(vals) {
                let tol = if v.is_finite() {
                    v.abs() * 1e-2 + 1e-3
                } else {
                    0.0
                };
                assert!((g - v).abs() <= tol || g == &v, "{mid}: {g} vs {v}");
            }
        }
    }

    #[test]
    fn bf16_to_f32_is_exact_from_unaligned_source() {
        let src = [0u8, 0x80, 0x3f, 0x00, 0xc0]; // offset 1: 1.0, -2.0 as bf16
        let mut out = Aligned([0; 64]);
        convert(&src[1..], Dtype::BF16, &mut out.0[..8], Dtype::F32);
        assert_eq!(f32::from_le_bytes(out.0[..4].try_into().unwrap()), 1.0);
        assert_eq!(f32::from_le_bytes(out.0[4..8].try_into().unwrap()), -2.0);
    }
}
