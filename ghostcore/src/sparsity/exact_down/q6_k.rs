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
/// Outputs per tile of a neuron row: 32 bytes of whole quants (and 2 spare bits each), 16
/// bytes of nibbles.
const TILE: usize = 64;
const TILE_BYTES: usize = 48;
/// A row whose `n_embd` is an odd multiple of 32 ends with a tail of 32 outputs in 24 bytes.
const TAIL: usize = 32;
const TAIL_BYTES: usize = 24;
/// Most ids one coefficient scale covers (keeps the kernel's i32 sums in range).
const PIECE: usize = BLOCK;

/// The exact neuron-major copy of one layer's Q6_K `ffn_down`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactQ6kDown {
    n_embd: usize,
    n_ff: usize,
    /// `n_ff` rows of `n_embd / 64` tiles of 48 bytes, then, when `n_embd % 64 == 32`, a
    /// tail of 24 bytes; see [`quant_position`] for where each output's 6 bits lie. The tile
    /// layout lets the SIMD kernel interleave four rows' packed bytes with in-lane unpacks
    /// and unpack the 6-bit quants of 64 outputs × 4 rows straight into the i32 lanes of
    /// outputs in order.
    quants: Vec<u8>,
    /// Per sub-block of 16 neurons: the `n_embd` i8 scales.
    sub_scales: Vec<i8>,
    /// Per block of 256 neurons: the `n_embd` f16 scales (bits).
    block_scales: Vec<u16>,
}

/// Where output `o`'s quant lies in a row of `n_embd` outputs: `(byte, shift)` of its low
/// 4 bits and `(byte, shift)` of its high 2 bits.
///
/// A 64-output tile (48 bytes) has 32 bytes of whole quants and 16 bytes of nibbles. Output
/// `o = 32·half + 8k + 4s + m` (`half, s < 2`, `k, m < 4`) belongs to position
/// `p = 16s + 4k + m`: for `half = 0`, byte `p` holds its 6 bits in bits 0–5; for `half = 1`,
/// byte `p` holds its high 2 bits in bits 6–7 and byte `32 + 4k + m` its low 4 bits (low
/// nibble for `s = 0`, high for `s = 1`). So byte `p` and the nibble of byte `32 + p % 16`
/// that it pairs with lie in the 128-bit lane (`s`) of `p`, and four rows' bytes `4k..4k+4`
/// (and `16 + 4k..`, and `32 + 4k..`), interleaved by in-lane unpacks, give the i32 lanes of
/// outputs `8k..8k+8` and `32 + 8k..` in order.
///
/// The 32-output tail (24 bytes): output `o` has its low 4 bits in byte `o % 16` (low nibble
/// for `o < 16`) and its high 2 bits in byte `16 + o % 8`, bits `2·(o / 8)`.
fn quant_position(n_embd: usize, o: usize) -> ((usize, u32), (usize, u32)) {
    let (t, i) = (o / TILE, o % TILE);
    let base = t * TILE_BYTES;
    if base + TILE_BYTES <= n_embd / TAIL * TAIL_BYTES {
        let (half, r) = (i / 32, i % 32);
        let (k, s, m) = (r / 8, (r % 8) / 4, r % 4);
        let p = base + 16 * s + 4 * k + m;
        if half == 0 {
            ((p, 0), (p, 4))
        } else {
            ((base + 32 + 4 * k + m, 4 * s as u32), (p, 6))
        }
    } else {
        (
            (base + i % 16, if i < 16 { 0 } else { 4 }),
            (base + 16 + i % 8, 2 * (i / 8) as u32),
        )
    }
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
        let row = n_embd / TAIL * TAIL_BYTES;
        let mut quants = vec![0u8; n_ff * row];
        let mut sub_scales = vec![0i8; n_ff / SUB * n_embd];
        let mut block_scales = vec![0u16; n_ff / BLOCK * n_embd];
        for o in 0..n_embd {
            let ((lo_byte, lo_shift), (hi_byte, hi_shift)) = quant_position(n_embd, o);
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
        self.n_embd / TAIL * TAIL_BYTES
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
            self.accumulate_quantized(ids, coefs, out, acc, avx2::Dot4::best());
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
        dot: avx2::Dot4,
    ) {
        let n = self.n_embd;
        let row = self.row_bytes();
        // `acc` holds the piece's sums (first `n`), then one run's (`n` more).
        acc.clear();
        acc.resize(2 * n, 0);
        let (acc, run_sums) = acc.split_at_mut(n);
        // Ids whose rows' first `ahead` bytes were prefetched before the kernel: it then
        // prefetches each row of the next groups as it walks the rows of the current one.
        let ahead = PREFETCH_AHEAD.min(row);
        let mut pf = 0;
        let mut k = 0;
        while k < ids.len() {
            let end = run_end(ids, k, BLOCK).min(k + PIECE);
            let amax = coefs[k..end].iter().fold(0f32, |m, h| m.max(h.abs()));
            if amax == 0.0 {
                k = end;
                continue;
            }
            let inv = 127.0 / amax;
            let mut hq = [0i8; PIECE];
            avx2::round_to_i8(&coefs[k..end], inv, &mut hq[..end - k]);
            acc.fill(0);
            let mut r = k;
            while r < end {
                let r_end = run_end(ids, r, SUB).min(r + SUB).min(end);
                let want = (r_end + avx2::NEXT).min(ids.len());
                let next = &ids[r_end..want];
                if pf < r {
                    // The kernel prefetches ahead within a run; a run it did not reach
                    // (the first) starts with its rows' first lines.
                    for &j in &ids[r..r_end] {
                        prefetch(&self.quants[j as usize * row..][..ahead]);
                    }
                }
                pf = pf.max(want);
                avx2::sub_block_run(
                    self,
                    &ids[r..r_end],
                    &hq[r - k..r_end - k],
                    next,
                    acc,
                    run_sums,
                    dot,
                );
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
        let ((lo_byte, lo_shift), (hi_byte, hi_shift)) = quant_position(self.n_embd, o);
        let lo = r[lo_byte] >> lo_shift & 0x0f;
        let hi = r[hi_byte] >> hi_shift & 3;
        lo | (hi << 4)
    }
}

#[cfg(target_arch = "x86_64")]
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
/// The SIMD kernels' sums over one run's tail outputs (`n_embd % 64 == 32`), in plain
/// integers: `acc[o] += sc[o] · Σ_k hq[k] · (q[ids[k]][o] − 32)` for the last 32 outputs.
fn tail_run(c: &ExactQ6kDown, ids: &[u32], hq: &[i8], acc: &mut [i32]) {
    let n = c.n_embd;
    if n % TILE == 0 {
        return;
    }
    let sc = &c.sub_scales[ids[0] as usize / SUB * n..][..n];
    for o in n - TAIL..n {
        let s: i32 = ids
            .iter()
            .zip(hq)
            .map(|(&j, &h)| h as i32 * (c.quant(j as usize, o) as i32 - 32))
            .sum();
        acc[o] += sc[o] as i32 * s;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ExactQ6kDown, SUB, TILE, TILE_BYTES};

    /// How four rows' bytes times four i8 coefficients are summed into i32 lanes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Dot4 {
        /// `maddubs` + `madd` by ones (AVX2).
        Avx2,
        /// `vpdpbusd` (AVX-512 VNNI + VL); the same integers.
        Vnni,
    }

    impl Dot4 {
        /// The kernel this process runs (VNNI where [`crate::quant::vnni_active`]).
        pub(super) fn best() -> Self {
            if crate::quant::vnni_active() {
                Dot4::Vnni
            } else {
                Dot4::Avx2
            }
        }
    }

    /// Ids after a run whose rows the kernel prefetches (two groups of four).
    pub(super) const NEXT: usize = 8;

    /// `acc[o] += sc[g][o] · Σ_k hq[k] · (q[ids[k]][o] − 32)` for a run of at most 16 ids in
    /// one sub-block `g`; `next` (at most [`NEXT`]) are the ids after the run, whose rows
    /// are prefetched; `run_sums` is scratch of `n_embd`. Only called after `active_isa()`
    /// reported AVX2+FMA+F16C, and with [`Dot4::Vnni`] only where `vnni_active()`.
    pub(super) fn sub_block_run(
        c: &ExactQ6kDown,
        ids: &[u32],
        hq: &[i8],
        next: &[u32],
        acc: &mut [i32],
        run_sums: &mut [i32],
        dot: Dot4,
    ) {
        assert!(
            !ids.is_empty()
                && ids.len() <= SUB
                && hq.len() == ids.len()
                && acc.len() == c.n_embd
                && run_sums.len() == c.n_embd
                && next.len() <= NEXT
        );
        // SAFETY: CPU support checked by the caller (`accumulate`; VNNI by `Dot4::best`).
        // `accumulate` checked every id against `n_ff`, and `acc.len() == run_sums.len() ==
        // n_embd`, a multiple of 32 (asserted above and at construction): each row `j·row ..
        // (j+1)·row` holds `n_embd / 64` whole 48-byte tiles, and sub-block `g`'s `n_embd`
        // scales and every 64-output tile of `acc` and `run_sums` read or written below lie
        // inside bounds. Prefetch addresses may lie anywhere.
        unsafe {
            match dot {
                Dot4::Avx2 => sub_block_run_impl::<false>(c, ids, hq, next, acc, run_sums),
                Dot4::Vnni => sub_block_run_impl::<true>(c, ids, hq, next, acc, run_sums),
            }
        }
        super::tail_run(c, ids, hq, acc);
    }

    /// The run's rows are taken four at a time (a padded group repeats its first row at
    /// coefficient 0), and each group walks its four rows from start to end, 64 outputs (a
    /// 48-byte tile of each row) at a time, so that memory is read row after row, as the
    /// hardware prefetcher expects, and each row is prefetched two groups ahead (the rows of
    /// the next run's first groups too). Per tile, the four rows' 32 bytes of whole quants
    /// (with 2 spare bits each) and 16 bytes of nibbles (broadcast to both 128-bit lanes) are
    /// interleaved byte by byte with in-lane unpacks, so that each 32-bit lane holds the four
    /// rows' bits of two outputs; masks and shifts (per lane for the nibbles) then give the
    /// four rows' 6-bit quants of 8 outputs in order per vector, summed times the four
    /// coefficients into the run's i32 sums by [`dot4`]; the last group adds them, less
    /// `32 · Σ hq` and times the i8 sub-block scale, into `acc`. |Σ| per lane ≤ 16 · 127 · 63, after the correction
    /// ≤ 16 · 127 · 32; per piece of ≤ 256 ids, |acc| ≤ 256 · 127 · 32 · 128 < 2³¹.
    ///
    /// Walking all rows of a run side by side a tile at a time instead (sums in registers)
    /// read SmolLM2's 576-wide down copy from memory at 1.4–1.7× the dense down's time at
    /// 60% of its bytes; row by row, 1.0–1.2× (`ghost tune` curves, 2-core Zen 3 VM).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sub_block_run_impl<const VNNI: bool>(
        c: &ExactQ6kDown,
        ids: &[u32],
        hq: &[i8],
        next: &[u32],
        acc: &mut [i32],
        run_sums: &mut [i32],
    ) {
        let n = c.n_embd;
        let row = c.row_bytes();
        // Row offsets of the run's groups, then of the two groups after it (for prefetching
        // only: a missing id repeats the first next one, or points nowhere useful).
        let mut rows = [[0usize; 4]; SUB / 4 + 2];
        let mut coef = [0i32; SUB / 4];
        let mut hsum = 0i32;
        let n_groups = ids.len().div_ceil(4);
        for (g, (group, h)) in ids.chunks(4).zip(hq.chunks(4)).enumerate() {
            let mut bytes = [0u8; 4];
            for i in 0..4 {
                let (j, hj) = match (group.get(i), h.get(i)) {
                    (Some(&j), Some(&hj)) => (j, hj),
                    _ => (group[0], 0),
                };
                rows[g][i] = j as usize * row;
                bytes[i] = hj as u8;
                hsum += hj as i32;
            }
            coef[g] = i32::from_le_bytes(bytes);
        }
        for i in 0..NEXT {
            let j = next.get(i).or(next.first()).unwrap_or(&ids[0]);
            rows[n_groups + i / 4][i % 4] = *j as usize * row;
        }
        let corr = _mm256_set1_epi32(32 * hsum);
        let q = c.quants.as_ptr();
        let sc = c.sub_scales.as_ptr().add(ids[0] as usize / SUB * n);
        let low6 = _mm256_set1_epi8(0x3f);
        let low4 = _mm256_set1_epi8(0x0f);
        let bits45 = _mm256_set1_epi8(0x30);
        // The nibble of the high-half outputs: low nibbles in lane 0, high in lane 1.
        let nibble_shift = _mm256_setr_epi64x(0, 0, 4, 4);
        let sums = run_sums.as_mut_ptr();
        let n_tiles = n / TILE;
        for g in 0..n_groups {
            let r = rows[g];
            // Two groups ahead; a run of one group also fetches the group right after it,
            // which no earlier group did.
            let (ahead, also) = if n_groups == 1 {
                (rows[2], Some(rows[1]))
            } else {
                (rows[g + 2], None)
            };
            let cv = _mm256_set1_epi32(coef[g]);
            let last = g + 1 == n_groups;
            for ti in 0..n_tiles {
                let (t, tile) = (ti * TILE, ti * TILE_BYTES);
                for i in 0..4 {
                    super::super::prefetch_line(q.wrapping_add(ahead[i] + tile));
                    if let Some(also) = also {
                        super::super::prefetch_line(q.wrapping_add(also[i] + tile));
                    }
                }
                let l: [__m256i; 4] =
                    std::array::from_fn(|i| _mm256_loadu_si256(q.add(r[i] + tile).cast()));
                let h: [__m256i; 4] = std::array::from_fn(|i| {
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(q.add(r[i] + tile + 32).cast()))
                });
                let (v, w) = (interleave(&l), interleave(&h));
                for k in 0..4 {
                    let lo = _mm256_and_si256(v[k], low6);
                    let hi = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(v[k], 2), bits45),
                        _mm256_and_si256(_mm256_srlv_epi64(w[k], nibble_shift), low4),
                    );
                    for (o, x) in [(t + 8 * k, lo), (t + 32 + 8 * k, hi)] {
                        let p = sums.add(o).cast::<__m256i>();
                        let before = if g == 0 {
                            _mm256_setzero_si256()
                        } else {
                            _mm256_loadu_si256(p)
                        };
                        let sum = dot4::<VNNI>(before, x, cv);
                        if last {
                            // The run's sums, corrected and scaled, into `acc` (a run of
                            // one group never touches `run_sums`).
                            let scv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(o).cast()));
                            let ap = acc.as_mut_ptr().add(o).cast::<__m256i>();
                            let prod = _mm256_mullo_epi32(scv, _mm256_sub_epi32(sum, corr));
                            _mm256_storeu_si256(ap, _mm256_add_epi32(_mm256_loadu_si256(ap), prod));
                        } else {
                            _mm256_storeu_si256(p, sum);
                        }
                    }
                }
            }
        }
    }

    /// Four rows' bytes (32 each, same positions) → four registers whose 32-bit lane `l` of
    /// register `k` holds the four rows' bytes `4k + l` of each 128-bit lane, in row order.
    #[inline(always)]
    unsafe fn interleave(x: &[__m256i; 4]) -> [__m256i; 4] {
        let (ab_lo, ab_hi) = (
            _mm256_unpacklo_epi8(x[0], x[1]),
            _mm256_unpackhi_epi8(x[0], x[1]),
        );
        let (cd_lo, cd_hi) = (
            _mm256_unpacklo_epi8(x[2], x[3]),
            _mm256_unpackhi_epi8(x[2], x[3]),
        );
        [
            _mm256_unpacklo_epi16(ab_lo, cd_lo),
            _mm256_unpackhi_epi16(ab_lo, cd_lo),
            _mm256_unpacklo_epi16(ab_hi, cd_hi),
            _mm256_unpackhi_epi16(ab_hi, cd_hi),
        ]
    }

    /// `acc + Σ_{b in 4i..4i+4} x[b] · y[b]` in each i32 lane `i`, `x` unsigned below 64, `y`
    /// signed: exact either way (`maddubs` pairs ≤ 2 · 63 · 127 < 2¹⁵, no saturation).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot4<const VNNI: bool>(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        if VNNI {
            crate::quant::dot_vnni::dpbusd(acc, x, y)
        } else {
            let pairs = _mm256_maddubs_epi16(x, y);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }

    /// `out[i] = round(x[i] · inv)` (to nearest, ties to even) for `|x[i] · inv| ≤ 127`
    /// (`inv = 127 / max|x|`), clamped to ±127 against float rounding.
    pub(super) fn round_to_i8(x: &[f32], inv: f32, out: &mut [i8]) {
        assert_eq!(x.len(), out.len());
        let whole = x.len() / 8 * 8;
        // SAFETY: CPU support (AVX2) checked by the caller; `whole ≤ x.len() == out.len()`.
        unsafe { round_to_i8_impl(&x[..whole], inv, &mut out[..whole]) };
        for (o, &h) in out[whole..].iter_mut().zip(&x[whole..]) {
            *o = (h * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }

    /// `x.len() == out.len()`, a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn round_to_i8_impl(x: &[f32], inv: f32, out: &mut [i8]) {
        let inv_v = _mm256_set1_ps(inv);
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let mut i = 0;
        while i < x.len() {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), inv_v);
            let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
            let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), _mm_packs_epi16(w, w));
            i += 8;
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

    /// Reconstructing every weight from the copy gives the dequantized original exactly, for
    /// widths of whole 64-output tiles (64, 576, 4096) and with a 32-output tail (96).
    #[test]
    fn copy_holds_the_original_weights_and_bytes() {
        for (n_embd, n_ff, seed) in [(64, 512, 1), (96, 256, 2), (576, 256, 3), (4096, 256, 4)] {
            let (data, deq) = random_down(n_embd, n_ff, seed);
            let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
            assert_eq!(copy.total_bytes(), data.len());
            for j in 0..n_ff {
                for o in 0..n_embd {
                    let d =
                        half::f16::from_bits(copy.block_scales[j / BLOCK * n_embd + o]).to_f32();
                    let sc = copy.sub_scales[j / SUB * n_embd + o] as f32;
                    let w = d * sc * (copy.quant(j, o) as i32 - 32) as f32;
                    assert_eq!(w, deq[o * n_ff + j], "{n_embd}: neuron {j} output {o}");
                }
            }
        }
    }

    /// Id lists for a down of `n_ff` neurons: sorted, unsorted, scattered single ids,
    /// repeated ids, empty, and runs of every length 1..=16 within sub-blocks.
    fn id_lists(n_ff: usize) -> Vec<Vec<u32>> {
        let sorted: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 0).collect();
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        shuffled.swap(0, 40);
        let last = n_ff as u32 - 1;
        let single_odd: Vec<u32> = vec![5, 17, 18, 100, 101, 102, last];
        let repeated: Vec<u32> = std::iter::repeat_n(7u32, 40).chain([8, 9]).collect();
        let run_lengths: Vec<u32> = (0..n_ff / SUB)
            .flat_map(|g| (0..g % SUB + 1).map(move |i| (g * SUB + i) as u32))
            .collect();
        vec![
            sorted,
            shuffled,
            single_odd,
            repeated,
            Vec::new(),
            run_lengths,
        ]
    }

    /// The largest |coefficient| of each id's piece (runs within one block, at most 256 ids),
    /// the scale the SIMD kernel rounds that id's coefficient with.
    fn piece_max(ids: &[u32], coefs: &[f32]) -> Vec<f64> {
        let mut piece_max = vec![0f64; ids.len()];
        let mut k = 0;
        while k < ids.len() {
            let end = run_end(ids, k, BLOCK).min(k + PIECE);
            let m = coefs[k..end]
                .iter()
                .fold(0f64, |m, h| m.max(h.abs() as f64));
            piece_max[k..end].iter_mut().for_each(|p| *p = m);
            k = end;
        }
        piece_max
    }

    /// Both kernels against the dequantized original in f64, for the id lists of
    /// [`id_lists`], at widths with a 32-output tail (96) and of whole 64-output tiles (576,
    /// 4096). The SIMD kernel rounds a piece's coefficients to i8 with one scale, so its
    /// bound is Σ_j |w_oj| · max|h in j's piece| / 254 plus float rounding.
    #[test]
    fn accumulate_matches_dequantized_original() {
        for (n_embd, n_ff, seed) in [(96, 768, 3), (576, 512, 4), (4096, 256, 5)] {
            let (data, deq) = random_down(n_embd, n_ff, seed);
            let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
            let mut st = 9u64;
            for ids in id_lists(n_ff) {
                let coefs: Vec<f32> = ids.iter().map(|_| lcg(&mut st)).collect();
                let piece_max = piece_max(&ids, &coefs);
                let (want, bound) =
                    reference_and_bound(&deq, n_embd, n_ff, &ids, &coefs, &piece_max);
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
    }

    /// The AVX2 (`maddubs` + `madd`) and VNNI (`vpdpbusd`) forms of the SIMD kernel sum the
    /// same integers, so they give the same bits, within the bound of the dequantized
    /// original (each where this CPU runs it).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_vnni_kernels_agree() {
        use avx2::Dot4;
        if crate::quant::best_supported_isa() != crate::quant::Isa::Avx2 {
            eprintln!("SKIPPED: this CPU has no AVX2");
            return;
        }
        let vnni = crate::quant::dot_vnni::cpu_supported();
        for (n_embd, n_ff, seed) in [(96, 512, 6), (576, 256, 7)] {
            let (data, deq) = random_down(n_embd, n_ff, seed);
            let copy = ExactQ6kDown::from_q6_k(GgmlType::Q6_K, n_embd, n_ff, &data).unwrap();
            let mut st = 11u64;
            for ids in id_lists(n_ff) {
                let coefs: Vec<f32> = ids.iter().map(|_| lcg(&mut st)).collect();
                let piece_max = piece_max(&ids, &coefs);
                let (want, bound) =
                    reference_and_bound(&deq, n_embd, n_ff, &ids, &coefs, &piece_max);
                let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
                let tol = 1e-5 * scale * (ids.len().max(1) as f64).sqrt();
                let mut avx2_out = vec![0f32; n_embd];
                copy.accumulate_quantized(&ids, &coefs, &mut avx2_out, &mut Vec::new(), Dot4::Avx2);
                for o in 0..n_embd {
                    let err = (avx2_out[o] as f64 - want[o]).abs();
                    assert!(
                        err < bound[o] + tol,
                        "o {o}: {} vs {}",
                        avx2_out[o],
                        want[o]
                    );
                }
                if vnni {
                    let mut vnni_out = vec![0f32; n_embd];
                    copy.accumulate_quantized(
                        &ids,
                        &coefs,
                        &mut vnni_out,
                        &mut Vec::new(),
                        Dot4::Vnni,
                    );
                    assert_eq!(avx2_out, vnni_out, "{n_embd} × {n_ff}");
                }
            }
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
