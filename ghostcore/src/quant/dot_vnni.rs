//! Decode (matvec) kernels for Q4_0, Q5_0 and Q8_0 weights on CPUs with AVX-512 VNNI, on
//! 256-bit vectors (avx512f + avx512bw + avx512vl + avx512vnni, with avx2 + fma + f16c).
//!
//! One `vpdpbusd` (u8 x i8 products summed by four into i32) replaces the two-step
//! `maddubs` + `madd` of the AVX2 kernels, and a mask register inserts the fifth bit of Q5_0
//! in one masked byte add. The weight quants are made unsigned (`q` for Q4_0/Q5_0, `q + 128`
//! for Q8_0) and the offset term `-OFFSET * Σ y` of each group of four activations is
//! prepared once per activation row as the accumulator's starting value, together with the
//! activation block scale as a broadcast f32.
//!
//! Bit-identical to [`super::dot_avx2`] (tested): each i32 lane holds the same exact integer
//! partial sum as the AVX2 kernel's lane (for Q8_0, whose AVX2 lane k sums bytes 2k, 2k+1,
//! 16+2k, 17+2k, both operands are first reordered by 16-bit words so `vpdpbusd` groups those
//! same bytes; the activations once, at preparation), the scale product is the same f32
//! multiply, and blocks go through the same two alternating FMA chains and final horizontal
//! sum.
//!
//! The three AVX-512 instructions used (`vpdpbusd`, `vpermw`, a masked `vpaddb`) are written as
//! inline assembly on 256-bit registers, because their intrinsics and `target_feature` names
//! are newer than this crate's minimum Rust version; everything else is AVX2 intrinsics.
//!
//! Every `unsafe fn` here may only run on a CPU for which [`cpu_supported`] is true.

#![cfg(target_arch = "x86_64")]

use std::arch::asm;
use std::arch::x86_64::*;

use crate::quant::blocks::{cast_blocks_prefix, Block, BlockQ4_0, BlockQ5_0, BlockQ8_0};
use crate::quant::dot_avx2::{hsum_ps, nibbles_32};
use crate::quant::kernels::{
    PrepareActs, PreparedBlock, PreparedKernels, RowDotPrepared, RowsDotPrepared,
    RowsGatherPrepared,
};
use crate::quant::types::GgmlType;

/// Whether this CPU runs the kernels of this module (AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C).
pub(crate) fn cpu_supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// A 32-weight block type against Q8_0 activations, as these kernels see it.
trait VnniBlock {
    type W: Block;
    /// What the unsigned quants exceed the signed weights by (`w = d * (u - OFFSET)`).
    const OFFSET: i32;
    /// Whether quants and activations are reordered by [`interleave_halves`] (see the module
    /// docs).
    const INTERLEAVE: bool;
    /// The 32 weight quants as unsigned bytes, in activation order (interleaved when
    /// `INTERLEAVE`).
    unsafe fn unsigned_quants(x: &Self::W) -> __m256i;
    fn scale(x: &Self::W) -> [u8; 2];
}

struct Q4_0Vnni;
struct Q5_0Vnni;
struct Q8_0Vnni;

impl VnniBlock for Q4_0Vnni {
    type W = BlockQ4_0;
    const OFFSET: i32 = 8;
    const INTERLEAVE: bool = false;
    #[inline(always)]
    unsafe fn unsigned_quants(x: &BlockQ4_0) -> __m256i {
        nibbles_32(&x.qs)
    }
    #[inline(always)]
    fn scale(x: &BlockQ4_0) -> [u8; 2] {
        x.d
    }
}

impl VnniBlock for Q5_0Vnni {
    type W = BlockQ5_0;
    const OFFSET: i32 = 16;
    const INTERLEAVE: bool = false;
    #[inline(always)]
    unsafe fn unsigned_quants(x: &BlockQ5_0) -> __m256i {
        // Bit j of qh is the fifth bit (value 16) of weight j.
        add_16_where_bit_set(nibbles_32(&x.qs), x.qh())
    }
    #[inline(always)]
    fn scale(x: &BlockQ5_0) -> [u8; 2] {
        x.d
    }
}

impl VnniBlock for Q8_0Vnni {
    type W = BlockQ8_0;
    const OFFSET: i32 = 128;
    const INTERLEAVE: bool = true;
    #[inline(always)]
    unsafe fn unsigned_quants(x: &BlockQ8_0) -> __m256i {
        // i8 + 128 as u8: flip the sign bit.
        let u = _mm256_xor_si256(
            _mm256_loadu_si256(x.qs.as_ptr().cast()),
            _mm256_set1_epi8(i8::MIN),
        );
        interleave_halves(u)
    }
    #[inline(always)]
    fn scale(x: &BlockQ8_0) -> [u8; 2] {
        x.d
    }
}

/// `acc + Σ_{b in 4k..4k+4} u8(a[b]) * i8(b[b])` in each i32 lane k (`vpdpbusd`, EVEX:
/// AVX512-VNNI + VL); exact, no saturation (|sum| < 2^17 per lane and call).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut r = acc;
    // SAFETY: register-only instruction; the caller runs on a CPU with AVX512-VNNI + VL.
    unsafe {
        asm!(
            "{{evex}} vpdpbusd {r}, {a}, {b}",
            r = inout(ymm_reg) r,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// The 16-bit words of `v` in the order 0, 8, 1, 9, .., 7, 15 (`vpermw`, AVX512-BW + VL), so
/// that 32-bit lane k holds bytes 2k, 2k+1, 16+2k, 17+2k.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn interleave_halves(v: __m256i) -> __m256i {
    let order = _mm256_setr_epi16(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    let r: __m256i;
    // SAFETY: register-only instruction; the caller runs on a CPU with AVX512-BW + VL.
    unsafe {
        asm!(
            "vpermw {r}, {idx}, {v}",
            r = lateout(ymm_reg) r,
            idx = in(ymm_reg) order,
            v = in(ymm_reg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// `v` with 16 added to byte j wherever bit j of `bits` is set (`kmovd` + masked `vpaddb`,
/// AVX512-BW + VL).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_16_where_bit_set(v: __m256i, bits: u32) -> __m256i {
    let sixteen = _mm256_set1_epi8(16);
    let mut r = v;
    // SAFETY: register-only instructions on a CPU with AVX512-BW + VL. Mask register k1 is
    // overwritten. Where AVX-512 is enabled for the whole build (`-C target-cpu=...`), the
    // clobber is declared. Otherwise Rust cannot name mask registers, and none needs to be
    // declared: the compiler allocates no mask register in code built without AVX-512, and k1
    // is call-clobbered in the ABI.
    #[cfg(target_feature = "avx512f")]
    unsafe {
        asm!(
            "kmovd k1, {bits:e}",
            "vpaddb {r} {{k1}}, {r}, {c}",
            r = inout(ymm_reg) r,
            bits = in(reg) bits,
            c = in(ymm_reg) sixteen,
            out("k1") _,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    #[cfg(not(target_feature = "avx512f"))]
    unsafe {
        asm!(
            "kmovd k1, {bits:e}",
            "vpaddb {r} {{k1}}, {r}, {c}",
            r = inout(ymm_reg) r,
            bits = in(reg) bits,
            c = in(ymm_reg) sixteen,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// The prepare function and kernels for `ty`, if this module has them. Callers must have
/// checked [`cpu_supported`].
pub(crate) fn prepared_kernels(ty: GgmlType) -> Option<PreparedKernels> {
    macro_rules! wrap {
        ($k:ty) => {{
            fn prepare(a: &[u8], out: &mut [PreparedBlock]) {
                // SAFETY: only reachable through `prepared_kernels`, whose caller verified
                // `cpu_supported`; reads and writes stay inside both slices.
                unsafe { prepare_acts::<$k>(cast_blocks_prefix::<BlockQ8_0>(a), out) }
            }
            fn row(w: &[u8], a: &[u8], pre: &[PreparedBlock]) -> f32 {
                // SAFETY: as above; the kernel reads only blocks present in all three slices.
                unsafe {
                    dot_row::<$k>(
                        cast_blocks_prefix::<<$k as VnniBlock>::W>(w),
                        cast_blocks_prefix::<BlockQ8_0>(a),
                        pre,
                    )
                }
            }
            fn rows(w: &[u8], w_row: usize, a: &[u8], pre: &[PreparedBlock], out: &mut [f32]) {
                // SAFETY: as above; every row slice is taken with bounds checks.
                unsafe { dot_rows::<$k>(w, w_row, cast_blocks_prefix::<BlockQ8_0>(a), pre, out) }
            }
            fn rows_gather(
                w: &[u8],
                w_row: usize,
                ids: &[u32],
                a: &[u8],
                pre: &[PreparedBlock],
                out: &mut [f32],
            ) {
                // SAFETY: as above; every row slice is taken with bounds checks.
                unsafe {
                    dot_rows_gather::<$k>(
                        w,
                        w_row,
                        ids,
                        cast_blocks_prefix::<BlockQ8_0>(a),
                        pre,
                        out,
                    )
                }
            }
            PreparedKernels {
                prepare: prepare as PrepareActs,
                row: row as RowDotPrepared,
                rows: Some(rows as RowsDotPrepared),
                rows_gather: Some(rows_gather as RowsGatherPrepared),
            }
        }};
    }
    match ty {
        GgmlType::Q4_0 => Some(wrap!(Q4_0Vnni)),
        GgmlType::Q5_0 => Some(wrap!(Q5_0Vnni)),
        GgmlType::Q8_0 => Some(wrap!(Q8_0Vnni)),
        _ => None,
    }
}

/// Per activation block: bytes 0..32 the eight i32 `-OFFSET * (sum of lane g's four
/// activations)`, bytes 32..64 the block scale as eight f32, and for `INTERLEAVE` kernels
/// bytes 64..96 the reordered activation quants.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prepare_acts<K: VnniBlock>(a: &[BlockQ8_0], out: &mut [PreparedBlock]) {
    let ones = _mm256_set1_epi8(1);
    let neg_offset = _mm256_set1_epi32(-K::OFFSET);
    for (y, o) in a.iter().zip(out.iter_mut()) {
        let mut yv = _mm256_loadu_si256(y.qs.as_ptr().cast());
        if K::INTERLEAVE {
            yv = interleave_halves(yv);
            _mm256_storeu_si256(o.0.as_mut_ptr().add(64).cast(), yv);
        }
        let sums = dpbusd(_mm256_setzero_si256(), ones, yv);
        let init = _mm256_mullo_epi32(sums, neg_offset);
        let scale = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
        _mm256_storeu_si256(o.0.as_mut_ptr().cast(), init);
        _mm256_storeu_ps(o.0.as_mut_ptr().add(32).cast(), scale);
    }
}

/// `d_x * d_y` broadcast, and the block's exact integer dot product as eight i32 partial sums.
#[inline(always)]
unsafe fn block_terms<K: VnniBlock>(
    x: &K::W,
    y: &BlockQ8_0,
    p: &PreparedBlock,
) -> (__m256, __m256i) {
    let dx = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(K::scale(x))));
    let d = _mm256_mul_ps(dx, _mm256_loadu_ps(p.0.as_ptr().add(32).cast()));
    let init = _mm256_loadu_si256(p.0.as_ptr().cast());
    let yv = if K::INTERLEAVE {
        _mm256_loadu_si256(p.0.as_ptr().add(64).cast())
    } else {
        _mm256_loadu_si256(y.qs.as_ptr().cast())
    };
    (d, dpbusd(init, K::unsigned_quants(x), yv))
}

#[inline(always)]
unsafe fn dot_row_inline<K: VnniBlock>(w: &[K::W], a: &[BlockQ8_0], pre: &[PreparedBlock]) -> f32 {
    let n = w.len().min(a.len()).min(pre.len());
    let (w, a, pre) = (&w[..n], &a[..n], &pre[..n]);
    // Even blocks on chain 0, odd blocks on chain 1, a last odd block on chain 0: the order
    // of the AVX2 kernels.
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 1 < n {
        let (d0, s0) = block_terms::<K>(&w[i], &a[i], &pre[i]);
        let (d1, s1) = block_terms::<K>(&w[i + 1], &a[i + 1], &pre[i + 1]);
        acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(s0), acc0);
        acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(s1), acc1);
        i += 2;
    }
    if i < n {
        let (d, s) = block_terms::<K>(&w[i], &a[i], &pre[i]);
        acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc0);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row<K: VnniBlock>(w: &[K::W], a: &[BlockQ8_0], pre: &[PreparedBlock]) -> f32 {
    dot_row_inline::<K>(w, a, pre)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<K: VnniBlock>(
    w: &[u8],
    w_row: usize,
    a: &[BlockQ8_0],
    pre: &[PreparedBlock],
    out: &mut [f32],
) {
    for (row, o) in w.chunks_exact(w_row.max(1)).zip(out.iter_mut()) {
        *o = dot_row_inline::<K>(cast_blocks_prefix::<K::W>(row), a, pre);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_gather<K: VnniBlock>(
    w: &[u8],
    w_row: usize,
    ids: &[u32],
    a: &[BlockQ8_0],
    pre: &[PreparedBlock],
    out: &mut [f32],
) {
    let w_row = w_row.max(1);
    let ahead_rows = crate::quant::drivers::gather_prefetch_rows(w_row);
    for (k, o) in out.iter_mut().enumerate().take(ids.len()) {
        let row = crate::quant::drivers::gathered_row(w, w_row, ids, k, ahead_rows);
        *o = dot_row_inline::<K>(cast_blocks_prefix::<K::W>(row), a, pre);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::quantize_activations;
    use crate::quant::kernels::{best_supported_isa, Isa};

    /// Random weight rows of `ty` with finite f16 scales (every quant byte random, so Q8_0
    /// weights include -128), and activations quantized from random floats.
    fn random_case(ty: GgmlType, n_rows: usize, n_cols: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = crate::sampling::Rng::new(seed);
        let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let mut w: Vec<u8> = (0..n_rows * rb).map(|_| rng.next_u64() as u8).collect();
        for blk in w.chunks_exact_mut(ty.type_size()) {
            let d = (rng.next_f64() * 2.0 - 1.0) * 0.05;
            blk[..2].copy_from_slice(&half::f16::from_f64(d).to_bits().to_le_bytes());
        }
        let x: Vec<f32> = (0..n_cols)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32 * 3.0)
            .collect();
        let mut a = vec![0u8; GgmlType::Q8_0.row_bytes(n_cols as u64).unwrap() as usize];
        quantize_activations(GgmlType::Q8_0, &x, &mut a).unwrap();
        (w, a)
    }

    #[test]
    fn vnni_kernels_match_the_avx2_kernels_bit_for_bit() {
        if best_supported_isa() != Isa::Avx2 || !cpu_supported() {
            eprintln!("SKIPPED: this CPU has no AVX-512 VNNI");
            return;
        }
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            // Odd and even block counts (a last block on chain 0), one block, many blocks.
            for (n_cols, seed) in [(576, 1), (544, 2), (32, 3), (4096, 4)] {
                let n_rows = 37;
                let (w, a) = random_case(ty, n_rows, n_cols, seed);
                let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
                let plain = crate::quant::dot_avx2::row_dot(ty).unwrap();
                let k = prepared_kernels(ty).unwrap();
                let mut pre = vec![PreparedBlock::ZERO; n_cols / 32];
                (k.prepare)(&a, &mut pre);
                let mut rows_out = vec![0f32; n_rows];
                (k.rows.unwrap())(&w, rb, &a, &pre, &mut rows_out);
                for r in 0..n_rows {
                    let row = &w[r * rb..(r + 1) * rb];
                    let want = plain(row, &a);
                    let one = (k.row)(row, &a, &pre);
                    assert_eq!(want.to_bits(), one.to_bits(), "{ty} {n_cols} row {r}");
                    assert_eq!(
                        want.to_bits(),
                        rows_out[r].to_bits(),
                        "{ty} {n_cols} rows {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_quants_stay_exact() {
        if best_supported_isa() != Isa::Avx2 || !cpu_supported() {
            eprintln!("SKIPPED: this CPU has no AVX-512 VNNI");
            return;
        }
        // Q8_0 weights of -128 and 127 against activation bytes of -128 and 127 (a hand-made
        // activation block, which the quantizer never writes): the AVX2 kernel widens to i16
        // and is exact for any bytes; so must this one be.
        let one = half::f16::from_f32(1.0).to_bits().to_le_bytes();
        for (wq, aq) in [(-128i8, -128i8), (-128, 127), (127, -128), (127, 127)] {
            let mut w = vec![0u8; 34];
            w[..2].copy_from_slice(&one);
            w[2..].fill(wq as u8);
            let mut a = w.clone();
            a[2..].fill(aq as u8);
            let plain = crate::quant::dot_avx2::row_dot(GgmlType::Q8_0).unwrap()(&w, &a);
            let k = prepared_kernels(GgmlType::Q8_0).unwrap();
            let mut pre = vec![PreparedBlock::ZERO; 1];
            (k.prepare)(&a, &mut pre);
            let got = (k.row)(&w, &a, &pre);
            assert_eq!(plain, 32.0 * wq as f32 * aq as f32);
            assert_eq!(got.to_bits(), plain.to_bits(), "w {wq} a {aq}");
        }
    }
}
