//! A neuron-major copy of a Q6_K `ffn_down` that keeps the model's own 6-bit quants and
//! scales: the same bytes as the original and exactly the same weights.
//!
//! In a Q6_K `ffn_down` (`n_embd` rows of `n_ff`), weight `(o, j)` is `d·sc·(q − 32)` with a
//! 6-bit `q`, an i8 `sc` shared by the 16 neurons of sub-block `g = j / 16` along row `o`,
//! and an f16 `d` shared by the 256 neurons of block `b = j / 256` along row `o`. The copy
//! gives neuron `j` a row of `n_embd` 6-bit quants and keeps, per sub-block, the `n_embd`
//! i8 scales and, per block, the `n_embd` f16 scales: 6.5625 bits per weight, as Q6_K.
//!
//! The down projection over active neurons `S`, per block `b` and sub-block `g ⊂ b`:
//! `out[o] += d[b][o] · Σ_g sc[g][o] · Σ_{j∈S∩g} h_j (q[j][o] − 32)`. The SIMD kernel rounds
//! the coefficients `h_j` of one block to i8 with one scale (as the dense path quantizes its
//! down input to Q8_K per 256 values), so every sum up to the block scale is an exact integer.

use super::{prefetch, run_end, unit_runs, PREFETCH_AHEAD};
use crate::quant::blocks::BlockQ6K;
use crate::quant::{GgmlType, QK_K};
use crate::Result;

/// Neurons per i8 scale (a Q6_K sub-block).
pub const SUB: usize = 16;
/// Neurons per f16 scale (a Q6_K block).
pub const BLOCK: usize = QK_K;
/// Outputs per tile of a neuron row: 16 bytes of low nibbles, 8 bytes of high bit pairs.
const TILE: usize = 32;
const TILE_BYTES: usize = 24;
/// Most ids one coefficient scale covers (keeps the kernel's i32 sums in range).
const PIECE: usize = BLOCK;

/// The exact neuron-major copy of one layer's Q6_K `ffn_down`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactQ6kDown {
    n_embd: usize,
    n_ff: usize,
    /// `n_ff` rows of `n_embd / 32` tiles of 24 bytes. In tile `t` of row `j`, byte `i < 16`
    /// holds the low 4 bits of output `32t + i` (low nibble) and `32t + 16 + i` (high
    /// nibble); byte `16 + i` (`i < 8`) holds the high 2 bits of outputs `32t + i`,
    /// `32t + 8 + i`, `32t + 16 + i` and `32t + 24 + i` in bits 0–1, 2–3, 4–5 and 6–7.
    quants: Vec<u8>,
    /// Per sub-block of 16 neurons: the `n_embd` i8 scales.
    sub_scales: Vec<i8>,
    /// Per block of 256 neurons: the `n_embd` f16 scales (bits).
    block_scales: Vec<u16>,
}

/// The 256 unsigned 6-bit quants of a Q6_K block in weight order.
fn block_quants(blk: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for half in 0..2 {
        let ql = &blk.ql[64 * half..64 * half + 64];
        let qh = &blk.qh[32 * half..32 * half + 32];
        let y = &mut q[128 * half..128 * half + 128];
        for l in 0..32 {
            y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

impl ExactQ6kDown {
    /// Build the copy from `down` (`n_embd` rows of `n_ff` Q6_K weights). `Unsupported` when
    /// `down` is not Q6_K or `n_embd` is not a multiple of 32; `Format` when the data does
    /// not hold `n_embd × n_ff` weights.
    pub fn from_q6_k(ty: GgmlType, n_embd: usize, n_ff: usize, down: &[u8]) -> Result<Self> {
        let blocks = super::down_blocks::<BlockQ6K>(ty, n_embd, n_ff, down)?;
        let per_row = n_ff / QK_K;
        let row = n_embd / TILE * TILE_BYTES;
        let mut quants = vec![0u8; n_ff * row];
        let mut sub_scales = vec![0i8; n_ff / SUB * n_embd];
        let mut block_scales = vec![0u16; n_ff / BLOCK * n_embd];
        for o in 0..n_embd {
            let (t, i) = (o / TILE, o % TILE);
            let lo_byte = t * TILE_BYTES + i % 16;
            let lo_shift = if i < 16 { 0 } else { 4 };
            let hi_byte = t * TILE_BYTES + 16 + i % 8;
            let hi_shift = 2 * (i / 8);
            for (b, blk) in blocks[o * per_row..(o + 1) * per_row].iter().enumerate() {
                block_scales[b * n_embd + o] = u16::from_le_bytes(blk.d);
                for (s, &sc) in blk.scales.iter().enumerate() {
                    sub_scales[(b * QK_K / SUB + s) * n_embd + o] = sc;
                }
                for (e, &q) in block_quants(blk).iter().enumerate() {
                    let r = &mut quants[(b * QK_K + e) * row..][..row];
                    r[lo_byte] |= (q & 0x0f) << lo_shift;
                    r[hi_byte] |= (q >> 4) << hi_shift;
                }
            }
        }
        Ok(ExactQ6kDown {
            n_embd,
            n_ff,
            quants,
            sub_scales,
            block_scales,
        })
    }

    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    pub fn n_ff(&self) -> usize {
        self.n_ff
    }

    /// Bytes of one neuron's quants.
    pub fn row_bytes(&self) -> usize {
        self.n_embd / TILE * TILE_BYTES
    }

    /// Total bytes of the copy (those of the original Q6_K tensor).
    pub fn total_bytes(&self) -> usize {
        self.quants.len() + self.sub_scales.len() + 2 * self.block_scales.len()
    }

    /// Bytes read by [`Self::accumulate`] over `ids`: the quants of each id, the i8 scales of
    /// each run of ids in one sub-block, the f16 scales of each run in one block.
    pub fn bytes_for(&self, ids: &[u32]) -> usize {
        ids.len() * self.row_bytes()
            + unit_runs(ids, SUB) * self.n_embd
            + unit_runs(ids, BLOCK) * 2 * self.n_embd
    }

    /// `out[o] += Σ_k coefs[k] · down[o][ids[k]]`; `acc` is scratch (resized). Ids are
    /// taken in pieces within one block (at most 256 at a time) and, inside a piece, in runs
    /// within one sub-block, so ascending ids read each scale once; any order gives the same
    /// sum up to rounding.
    pub fn accumulate(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        acc: &mut Vec<i32>,
    ) -> Result<()> {
        super::check_accumulate(ids, coefs, out, self.n_embd, self.n_ff)?;
        #[cfg(target_arch = "x86_64")]
        if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
            self.accumulate_quantized(ids, coefs, out, acc);
            return Ok(());
        }
        let _ = acc;
        let mut k = 0;
        while k < ids.len() {
            let end = run_end(ids, k, BLOCK);
            piece_scalar(self, &ids[k..end], &coefs[k..end], out);
            k = end;
        }
        Ok(())
    }

    /// The AVX2 path: per piece, the coefficients rounded to i8 with one scale, the integer
    /// sums of each sub-block run scaled by its i8 scales into `acc`, then `out += d·s·acc`.
    #[cfg(target_arch = "x86_64")]
    fn accumulate_quantized(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        acc: &mut Vec<i32>,
    ) {
        let n = self.n_embd;
        let row = self.row_bytes();
        let mut k = 0;
        while k < ids.len() {
            let end = run_end(ids, k, BLOCK).min(k + PIECE);
            let amax = coefs[k..end].iter().fold(0f32, |m, h| m.max(h.abs()));
            if amax == 0.0 {
                k = end;
                continue;
            }
            let inv = 127.0 / amax;
            let hq: [i8; PIECE] = std::array::from_fn(|i| match coefs.get(k + i) {
                Some(h) if k + i < end => (h * inv).round().clamp(-127.0, 127.0) as i8,
                _ => 0,
            });
            acc.clear();
            acc.resize(n, 0);
            let mut r = k;
            while r < end {
                let r_end = run_end(ids, r, SUB).min(r + SUB).min(end);
                // The kernel walks the run's rows tile by tile (24 bytes of each row at a
                // time), prefetching each row `PREFETCH_AHEAD` bytes ahead; start the next
                // run's rows while this one is computed.
                if r_end < ids.len() {
                    let n_end = run_end(ids, r_end, SUB).min(r_end + SUB);
                    for &next in &ids[r_end..n_end] {
                        prefetch(&self.quants[next as usize * row..][..row.min(PREFETCH_AHEAD)]);
                    }
                }
                avx2::sub_block_run(self, &ids[r..r_end], &hq[r - k..r_end - k], acc);
                r = r_end;
            }
            let d = &self.block_scales[ids[k] as usize / BLOCK * n..][..n];
            avx2::add_scaled(d, amax / 127.0, acc, out);
            k = end;
        }
    }

    /// The 6-bit quant of output `o` in neuron `j`'s row.
    fn quant(&self, j: usize, o: usize) -> u8 {
        let r = &self.quants[j * self.row_bytes()..][..self.row_bytes()];
        let (t, i) = (o / TILE, o % TILE);
        let lo = r[t * TILE_BYTES + i % 16] >> (if i < 16 { 0 } else { 4 }) & 0x0f;
        let hi = r[t * TILE_BYTES + 16 + i % 8] >> (2 * (i / 8)) & 3;
        lo | (hi << 4)
    }
}

/// Reference: the weights exactly (`d·sc` is exact in f32), coefficients unrounded.
fn piece_scalar(c: &ExactQ6kDown, ids: &[u32], coefs: &[f32], out: &mut [f32]) {
    let n = c.n_embd;
    for (&j, &h) in ids.iter().zip(coefs) {
        let j = j as usize;
        let d = &c.block_scales[j / BLOCK * n..][..n];
        let sc = &c.sub_scales[j / SUB * n..][..n];
        for o in 0..n {
            let w = half::f16::from_bits(d[o]).to_f32() * sc[o] as f32;
            out[o] += h * w * (c.quant(j, o) as i32 - 32) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ExactQ6kDown, PREFETCH_AHEAD, SUB, TILE, TILE_BYTES};

    /// `acc[o] += sc[g][o] · Σ_k hq[k] · (q[ids[k]][o] − 32)` for a run of at most 16 ids in
    /// one sub-block `g`. Only called after `active_isa()` reported AVX2+FMA+F16C.
    pub(super) fn sub_block_run(c: &ExactQ6kDown, ids: &[u32], hq: &[i8], acc: &mut [i32]) {
        assert!(
            !ids.is_empty() && ids.len() <= SUB && hq.len() == ids.len() && acc.len() == c.n_embd
        );
        // SAFETY: CPU support checked by the caller (`accumulate`). `accumulate` checked every
        // id against `n_ff`, and `acc.len() == n_embd`, a multiple of 32 (asserted above
        // and at construction): each row `j·row .. (j+1)·row`, sub-block `g`'s `n_embd`
        // scales and every 32-output tile of `acc` read or written below lie inside bounds.
        unsafe { sub_block_run_impl(c, ids, hq, acc) }
    }

    /// For each tile of 32 outputs, the neurons are taken in pairs, interleaved byte by byte
    /// and multiplied with `maddubs` (exact i16 sums, widened every 2 pairs:
    /// |Σ| ≤ 2 · 2 · 63 · 127 = 32004), corrected by `32 · Σ hq` and scaled by the i8
    /// sub-block scale in i32. Per piece of ≤ 256 ids, |acc| ≤ 256 · 127 · 32 · 128 < 2³¹.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sub_block_run_impl(c: &ExactQ6kDown, ids: &[u32], hq: &[i8], acc: &mut [i32]) {
        let n = c.n_embd;
        let row = c.row_bytes();
        // Pairs (row offsets, coefficient pair); an odd run pairs its last neuron with
        // itself at a zero coefficient.
        let mut rows = [(0usize, 0usize); SUB / 2];
        let mut coef = [0i16; SUB / 2];
        let mut n_pairs = 0;
        let mut hsum = 0i32;
        for (pair, h) in ids.chunks(2).zip(hq.chunks(2)) {
            let (a, ha) = (pair[0] as usize, h[0]);
            let (b, hb) = match (pair.get(1), h.get(1)) {
                (Some(&b), Some(&hb)) => (b as usize, hb),
                _ => (a, 0),
            };
            rows[n_pairs] = (a * row, b * row);
            coef[n_pairs] = ((ha as u8 as u16) | ((hb as u8 as u16) << 8)) as i16;
            hsum += ha as i32 + hb as i32;
            n_pairs += 1;
        }
        let corr = _mm256_set1_epi32(32 * hsum);
        let q = c.quants.as_ptr();
        let sc = c.sub_scales.as_ptr().add(ids[0] as usize / SUB * n);
        let low4 = _mm_set1_epi8(0x0f);
        let three = _mm_set1_epi8(3);
        // The 32 quants of one row's tile: outputs 0..15 and 16..31, unsigned 6-bit.
        let load = |off: usize| -> (__m128i, __m128i) {
            let v = _mm_loadu_si128(q.add(off).cast());
            let h = _mm_loadl_epi64(q.add(off + 16).cast());
            let lo = _mm_and_si128(v, low4);
            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
            let h_lo = _mm_and_si128(_mm_unpacklo_epi64(h, _mm_srli_epi16(h, 2)), three);
            let h_hi = _mm_and_si128(
                _mm_unpacklo_epi64(_mm_srli_epi16(h, 4), _mm_srli_epi16(h, 6)),
                three,
            );
            (
                _mm_or_si128(lo, _mm_slli_epi16(h_lo, 4)),
                _mm_or_si128(hi, _mm_slli_epi16(h_hi, 4)),
            )
        };
        let widen = |x: __m128i| _mm256_cvtepi16_epi32(x);
        let mut t = 0;
        while t < n {
            let tile = t / TILE * TILE_BYTES;
            let mut isum = [_mm256_setzero_si256(); 4];
            let mut p = 0;
            while p < n_pairs {
                let stop = (p + 2).min(n_pairs);
                let (mut ab, mut cd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                while p < stop {
                    let (r1, r2) = rows[p];
                    super::super::prefetch_line(q.wrapping_add(r1 + tile + PREFETCH_AHEAD));
                    super::super::prefetch_line(q.wrapping_add(r2 + tile + PREFETCH_AHEAD));
                    let (lo1, hi1) = load(r1 + tile);
                    let (lo2, hi2) = load(r2 + tile);
                    let cv = _mm256_set1_epi16(coef[p]);
                    let x_ab =
                        _mm256_set_m128i(_mm_unpackhi_epi8(lo1, lo2), _mm_unpacklo_epi8(lo1, lo2));
                    let x_cd =
                        _mm256_set_m128i(_mm_unpackhi_epi8(hi1, hi2), _mm_unpacklo_epi8(hi1, hi2));
                    ab = _mm256_add_epi16(ab, _mm256_maddubs_epi16(x_ab, cv));
                    cd = _mm256_add_epi16(cd, _mm256_maddubs_epi16(x_cd, cv));
                    p += 1;
                }
                isum[0] = _mm256_add_epi32(isum[0], widen(_mm256_castsi256_si128(ab)));
                isum[1] = _mm256_add_epi32(isum[1], widen(_mm256_extracti128_si256(ab, 1)));
                isum[2] = _mm256_add_epi32(isum[2], widen(_mm256_castsi256_si128(cd)));
                isum[3] = _mm256_add_epi32(isum[3], widen(_mm256_extracti128_si256(cd, 1)));
            }
            for (k, s) in isum.iter().enumerate() {
                let o = t + 8 * k;
                let scv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(o).cast()));
                let ap = acc.as_mut_ptr().add(o).cast::<__m256i>();
                let prod = _mm256_mullo_epi32(scv, _mm256_sub_epi32(*s, corr));
                _mm256_storeu_si256(ap, _mm256_add_epi32(_mm256_loadu_si256(ap), prod));
            }
            t += TILE;
        }
    }

    /// `out[o] += d[o] · s · acc[o]` (`d` as f16 bits).
    pub(super) fn add_scaled(d: &[u16], s: f32, acc: &[i32], out: &mut [f32]) {
        assert!(d.len() == out.len() && acc.len() == out.len() && out.len() % 8 == 0);
        // SAFETY: CPU support (AVX2+FMA+F16C) checked by the caller; the three slices have
        // the same length, a multiple of 8, so every 8-wide access is in bounds.
        unsafe { add_scaled_impl(d, s, acc, out) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_scaled_impl(d: &[u16], s: f32, acc: &[i32], out: &mut [f32]) {
        let s_v = _mm256_set1_ps(s);
        let mut o = 0;
        while o < out.len() {
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(o).cast()));
            let x = _mm256_mul_ps(
                s_v,
                _mm256_cvtepi32_ps(_mm256_loadu_si256(acc.as_ptr().add(o).cast())),
            );
            let op = out.as_mut_ptr().add(o);
            _mm256_storeu_ps(op, _mm256_fmadd_ps(dv, x, _mm256_loadu_ps(op)));
            o += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::{assert_close, lcg, reference_and_bound};
    use super::*;

    /// A random Q6_K down (`n_embd` rows of `n_ff`) and its dequantized weights. Rows and
    /// sub-blocks get different magnitudes so the block and sub-block scales differ.
    fn random_down(n_embd: usize, n_ff: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        super::super::test_data::random_down(GgmlType::Q6_K, n_embd, n_ff, seed, |o, j| {
            (0.05 + 0.3 * (o % 7) as f32) * (1.0 + (j / 16 % 5) as f32)
        })
    }

    /// Reconstructing every weight from the copy gives the dequantized original exactly.
    #[test]
    fn copy_holds_the_original_weights_and_bytes() {
        let (n_embd, n_ff) = (64, 512);
        let (data, deq) = random_down(n_embd, n_ff, 1);
        let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
        assert_eq!(copy.total_bytes(), data.len());
        for j in 0..n_ff {
            for o in 0..n_embd {
                let d = half::f16::from_bits(copy.block_scales[j / BLOCK * n_embd + o]).to_f32();
                let sc = copy.sub_scales[j / SUB * n_embd + o] as f32;
                let w = d * sc * (copy.quant(j, o) as i32 - 32) as f32;
                assert_eq!(w, deq[o * n_ff + j], "neuron {j} output {o}");
            }
        }
    }

    /// Both kernels against the dequantized original in f64, for sorted, unsorted, repeated
    /// and empty id lists. The SIMD kernel rounds a piece's coefficients to i8 with one
    /// scale, so its bound is Σ_j |w_oj| · max|h in j's piece| / 254 plus float rounding.
    #[test]
    fn accumulate_matches_dequantized_original() {
        // 96 outputs: three 32-output tiles; 3 blocks of 256 neurons.
        let (n_embd, n_ff) = (96, 768);
        let (data, deq) = random_down(n_embd, n_ff, 3);
        let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
        let mut st = 9u64;
        let sorted: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 0).collect();
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        shuffled.swap(0, 40);
        let single_odd: Vec<u32> = vec![5, 17, 18, 300, 301, 302, 767];
        let repeated: Vec<u32> = std::iter::repeat_n(7u32, 40).chain([8, 9]).collect();
        for ids in [sorted, shuffled, single_odd, repeated, Vec::new()] {
            let coefs: Vec<f32> = ids.iter().map(|_| lcg(&mut st)).collect();
            // The pieces the kernel forms (runs within one block, at most 256 ids).
            let mut piece_max = vec![0f64; ids.len()];
            let mut k = 0;
            while k < ids.len() {
                let end = run_end(&ids, k, BLOCK).min(k + PIECE);
                let m = coefs[k..end]
                    .iter()
                    .fold(0f64, |m, h| m.max(h.abs() as f64));
                piece_max[k..end].iter_mut().for_each(|p| *p = m);
                k = end;
            }
            let (want, bound) = reference_and_bound(&deq, n_embd, n_ff, &ids, &coefs, &piece_max);
            let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
            let mut got = vec![0f32; n_embd];
            copy.accumulate(&ids, &coefs, &mut got, &mut Vec::new())
                .unwrap();
            let mut got_scalar = vec![0f32; n_embd];
            piece_scalar(&copy, &ids, &coefs, &mut got_scalar);
            // Exact weights: only f32 summation rounding.
            let tol = 1e-5 * scale * (ids.len().max(1) as f64).sqrt();
            assert_close(&got_scalar, &got, &want, &bound, tol);
        }
    }

    #[test]
    fn bytes_count_quants_and_both_scale_levels() {
        let (n_embd, n_ff) = (32, 512);
        let (data, _) = random_down(n_embd, n_ff, 5);
        let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
        // Ids 0, 1 (sub-block 0), 20 (sub-block 1), 300 (block 1): 3 sub-block runs, 2 block
        // runs.
        assert_eq!(copy.bytes_for(&[0, 1, 20, 300]), 4 * 24 + 3 * 32 + 2 * 64);
        assert_eq!(copy.bytes_for(&[]), 0);
        // Every neuron: exactly the original's bytes.
        let all: Vec<u32> = (0..n_ff as u32).collect();
        assert_eq!(copy.bytes_for(&all), data.len());
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let (data, _) = random_down(32, 256, 7);
        assert!(matches!(
            ExactQ6kDown::from_q6_k(GgmlType::Q4_K, 32, 256, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(matches!(
            ExactQ6kDown::from_q6_k(GgmlType::Q6_K, 48, 256, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(ExactQ6kDown::from_q6_k(GgmlType::Q6_K, 64, 256, &data).is_err());
        assert!(ExactQ6kDown::from_q6_k(GgmlType::Q6_K, 32, 256, &data[..data.len() - 1]).is_err());
        let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, 32, 256, &data).unwrap();
        let mut out = vec![0f32; 32];
        assert!(matches!(
            copy.accumulate(&[256], &[1.0], &mut out, &mut Vec::new()),
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            copy.accumulate(&[0], &[1.0, 2.0], &mut out, &mut Vec::new()),
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            copy.accumulate(&[0], &[1.0], &mut out[..16], &mut Vec::new()),
            Err(crate::Error::InvalidArgument(_))
        ));
    }
}
