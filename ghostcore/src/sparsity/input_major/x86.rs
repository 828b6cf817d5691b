//! The SIMD kernels of the input-major Q5_0 matvec: one loop, two instruction sets.
//!
//! Per input block (its kept columns padded to groups of four) and tile of 64 neurons: eight
//! i32 accumulators (neurons 0..8, .., 56..64 of the tile) start at `−16·Σxq` and stay in
//! registers over the block's column groups. For each group, each column's tile is one
//! 32-byte load: its low nibbles (neurons `π(k)`, see [`super::tile_position`]) and high
//! nibbles (`32 + π(k)`), each plus 16 where its fifth-bit mask says so. `unpack{lo,hi}_epi8`
//! of columns (a, b) and (c, d), then `unpack{lo,hi}_epi16` of those, put in 32-bit lane `l`
//! of register `g` the four columns' quants of neuron `8g + l`; a 4-way u8·i8 dot product
//! with the four inputs (broadcast) adds them to the neuron's sum. After the block: `out +=
//! d · (dx · Σ)` per neuron, the block's f16 scales loaded in natural order.
//!
//! The instruction sets differ only in two steps ([`Isa4`]): the fifth bit (a masked byte
//! add with AVX-512BW, a shuffle/compare with AVX2) and the dot product (`vpdpbusd` with
//! AVX-512 VNNI; `maddubs` then `madd` by ones with AVX2: pairs of u8·i8 products are at
//! most 2·31·127 in magnitude, exact in i16). Both sums are exact integers.
//!
//! Columns are short streams (40 bytes per tile) that the hardware prefetcher does not pick
//! up: each tile prefetches its block's columns a few tiles ahead (near the end of the range,
//! the next block's), see [`PREFETCH_COLUMN_TILES`].

use std::arch::x86_64::*;
use std::ops::Range;

use super::{ActiveBlock, InputMajorQ5_0, GROUP, TILE, TILE_BYTES};

/// How far ahead the kernels prefetch, in column tiles (40 bytes each): a block with `n`
/// kept columns prefetches `PREFETCH_COLUMN_TILES / n` tiles ahead, so about the same bytes
/// are in flight whatever the share of kept columns. Tuned on SmolLM2's 1536×576 shape from
/// memory (`bench/sparsity/input_major.rs`, cold): 128–256 within noise of each other,
/// 64 and 512 clearly slower.
const PREFETCH_COLUMN_TILES: usize = 160;

/// The two steps where the instruction sets differ.
trait Isa4 {
    /// `v` with 16 added to byte `k` wherever bit `k` of `bits` is set.
    unsafe fn add_fifth_bits(v: __m256i, bits: u32) -> __m256i;
    /// `acc + Σ_{b<4} u[4l+b] · x[4l+b]` per 32-bit lane `l` (u8 · i8, exact).
    unsafe fn dot4(acc: __m256i, u: __m256i, x: __m256i) -> __m256i;
}

struct Avx2;
struct Vnni;

impl Isa4 for Avx2 {
    #[inline(always)]
    unsafe fn add_fifth_bits(v: __m256i, bits: u32) -> __m256i {
        _mm256_or_si256(v, crate::quant::dot_avx2::fifth_bits_32(bits))
    }
    #[inline(always)]
    unsafe fn dot4(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

impl Isa4 for Vnni {
    #[inline(always)]
    unsafe fn add_fifth_bits(v: __m256i, bits: u32) -> __m256i {
        crate::quant::dot_vnni::add_16_where_bit_set(v, bits)
    }
    #[inline(always)]
    unsafe fn dot4(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        crate::quant::dot_vnni::dpbusd(acc, u, x)
    }
}

/// The AVX2 kernel; only selected when `InputMajorKernel::Avx2.is_supported()`.
pub(super) fn tiles_avx2(
    m: &InputMajorQ5_0,
    active: &[ActiveBlock],
    tiles: Range<usize>,
    out: &mut [f32],
) {
    // SAFETY: AVX2 + FMA + F16C checked by the caller (`is_supported`); memory: see
    // `tiles_impl`.
    unsafe { tiles_impl::<Avx2>(m, active, tiles, out) }
}

/// The AVX-512 VNNI kernel; only selected when `InputMajorKernel::Vnni.is_supported()`.
pub(super) fn tiles_vnni(
    m: &InputMajorQ5_0,
    active: &[ActiveBlock],
    tiles: Range<usize>,
    out: &mut [f32],
) {
    // SAFETY: AVX2 + FMA + F16C and AVX-512 F/BW/VL/VNNI checked by the caller
    // (`is_supported`); memory: see `tiles_impl`.
    unsafe { tiles_impl::<Vnni>(m, active, tiles, out) }
}

/// Four columns' bytes (32 neurons each, tile order) → four registers whose 32-bit lane `l`
/// of register `g` holds the four columns' quants of neuron `8g + l`.
#[inline(always)]
unsafe fn interleave4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> [__m256i; 4] {
    let (ab_l, ab_h) = (_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b));
    let (cd_l, cd_h) = (_mm256_unpacklo_epi8(c, d), _mm256_unpackhi_epi8(c, d));
    [
        _mm256_unpacklo_epi16(ab_l, cd_l),
        _mm256_unpackhi_epi16(ab_l, cd_l),
        _mm256_unpacklo_epi16(ab_h, cd_h),
        _mm256_unpackhi_epi16(ab_h, cd_h),
    ]
}

/// # Safety
/// The CPU runs `K`'s instructions and AVX2 + FMA + F16C. `active` was built by
/// `matvec_with_kernel` for `m`: every column offset is `j · col_bytes` for an input
/// `j < n_cols`, so `c + 40·t + 40 ≤ quants.len()` for every tile `t < n_rows / 64` (the
/// 32-byte load at `c + 40t` and the masks at `+32`, `+36` stay inside, and so do the
/// prefetch addresses); the padded column and input lists have the same length, a multiple
/// of 4; block indices are `< n_cols / 32`, so the scale loads (eight f16 at
/// `2·(block · n_rows + 64t + 8k)`) lie inside `scale_bytes()`. `tiles` lies within
/// `0..n_rows / 64` and `out` holds `64 · tiles.len()` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiles_impl<K: Isa4>(
    m: &InputMajorQ5_0,
    active: &[ActiveBlock],
    tiles: Range<usize>,
    out: &mut [f32],
) {
    out.fill(0.0);
    let q = m.quants().as_ptr();
    let n_tiles = tiles.len();
    let low4 = _mm256_set1_epi8(0x0f);
    for (ai, a) in active.iter().enumerate() {
        let init = _mm256_set1_epi32(-16 * a.xsum);
        let dx = _mm256_set1_ps(a.dx);
        let sc = m.scale_bytes().as_ptr().add(2 * a.block * m.n_rows);
        for ti in 0..n_tiles {
            let t = tiles.start + ti;
            let off = t * TILE_BYTES;
            // Prefetch the columns `ahead` tiles on, in this block or the next ones.
            let ahead = ti + PREFETCH_COLUMN_TILES / a.n_kept.max(1);
            if let Some(b) = active.get(ai + ahead / n_tiles) {
                let o = (tiles.start + ahead % n_tiles) * TILE_BYTES;
                for &c in b.kept() {
                    _mm_prefetch::<_MM_HINT_T0>(q.add(c + o).cast());
                }
            }
            let mut acc = [init; 8];
            let (cols, xq) = a.padded();
            for (cols, xq) in cols.chunks_exact(GROUP).zip(xq.chunks_exact(GROUP)) {
                let x = _mm256_set1_epi32(i32::from_le_bytes([
                    xq[0] as u8,
                    xq[1] as u8,
                    xq[2] as u8,
                    xq[3] as u8,
                ]));
                let p = [
                    q.add(cols[0] + off),
                    q.add(cols[1] + off),
                    q.add(cols[2] + off),
                    q.add(cols[3] + off),
                ];
                let v = p.map(|p| _mm256_loadu_si256(p.cast()));
                // Low nibbles: neurons 0..32 of the tile.
                let lo: [__m256i; 4] = std::array::from_fn(|k| {
                    let bits = std::ptr::read_unaligned(p[k].add(32).cast::<u32>());
                    K::add_fifth_bits(_mm256_and_si256(v[k], low4), bits)
                });
                let r = interleave4(lo[0], lo[1], lo[2], lo[3]);
                for g in 0..4 {
                    acc[g] = K::dot4(acc[g], r[g], x);
                }
                // High nibbles: neurons 32..64.
                let hi: [__m256i; 4] = std::array::from_fn(|k| {
                    let bits = std::ptr::read_unaligned(p[k].add(36).cast::<u32>());
                    let n = _mm256_and_si256(_mm256_srli_epi16(v[k], 4), low4);
                    K::add_fifth_bits(n, bits)
                });
                let r = interleave4(hi[0], hi[1], hi[2], hi[3]);
                for g in 0..4 {
                    acc[4 + g] = K::dot4(acc[4 + g], r[g], x);
                }
            }
            // out += d · (dx · Σ), eight neurons at a time.
            for (g, s) in acc.iter().enumerate() {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(2 * (t * TILE + 8 * g)).cast()));
                let v = _mm256_mul_ps(dx, _mm256_cvtepi32_ps(*s));
                let o = out.as_mut_ptr().add(ti * TILE + 8 * g);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(d, v, _mm256_loadu_ps(o)));
            }
        }
    }
}
