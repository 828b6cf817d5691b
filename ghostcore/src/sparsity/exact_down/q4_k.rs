//! A neuron-major copy of a Q4_K `ffn_down` that keeps the model's own 4-bit quants.
//!
//! In a Q4_K `ffn_down` (`n_embd` rows of `n_ff`), weight `(o, j)` is `A·q − B` with a 4-bit
//! `q` and, for the 32 neurons of sub-block `g = j / 32`, `A = d·sc` and `B = dmin·m`: 6-bit
//! `sc` and `m` per sub-block and f16 `d` and `dmin` per block of 256 neurons, along row `o`.
//! Transposing the quants gives neuron `j` a row of `n_embd` nibbles; the copy keeps, per
//! group of 32 neurons, the `n_embd` values of `sc` and of `m` (a byte each) and, per block,
//! the `n_embd` f16 values of `d` and of `dmin` as the file holds them. Nothing is
//! requantized or rounded: `A` and `B` are formed in f32 as the dequantizer forms them. The
//! copy holds 4.625 bits per weight, 37/36 of the original's 4.5 (the 6-bit scales take a
//! byte each), so a skipped neuron saves almost all of its down bytes. (The first version
//! stored `A` and `B` as f16 per group and output: 5 bits per weight, so its scales alone
//! were 22% of the original's bytes, read whenever a group had one active neuron.)
//!
//! The down projection over active neurons `S` is then, per group `g` of block `b`:
//! `out[o] += d[b][o]·sc[g][o] · Σ_{j∈S∩g} h_j q[j][o] − dmin[b][o]·m[g][o] · Σ_{j∈S∩g} h_j`.

use super::{prefetch, run_end, unit_runs, PREFETCH_AHEAD};
use crate::quant::blocks::{unpack_scales_mins_k4, BlockQ4K};
use crate::quant::{GgmlType, QK_K};
use crate::Result;

/// Neurons per scale group (a Q4_K sub-block).
pub const GROUP: usize = 32;
/// Neurons per f16 `d`/`dmin` pair (a Q4_K block).
pub const BLOCK: usize = QK_K;

/// The exact neuron-major copy of one layer's Q4_K `ffn_down`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactQ4kDown {
    n_embd: usize,
    n_ff: usize,
    /// `n_ff` rows of `n_embd / 2` bytes. In row `j`, the 16 bytes of output block `b` (32
    /// outputs) hold output `32b + i` in the low nibble of byte `i` and `32b + 16 + i` in the
    /// high nibble.
    quants: Vec<u8>,
    /// Per group: `n_embd` values of `sc` then `n_embd` values of `m` (6-bit, a byte each).
    group_scales: Vec<u8>,
    /// Per block: `n_embd` values of `d` then `n_embd` values of `dmin`, as f16 bits.
    block_scales: Vec<u16>,
}

impl ExactQ4kDown {
    /// Build the copy from `down` (`n_embd` rows of `n_ff` Q4_K weights). `Unsupported` when
    /// `down` is not Q4_K or `n_embd` is not a multiple of 32.
    pub fn from_q4_k(ty: GgmlType, n_embd: usize, n_ff: usize, down: &[u8]) -> Result<Self> {
        let blocks = super::down_blocks::<BlockQ4K>(ty, n_embd, n_ff, down)?;
        let per_row = n_ff / QK_K;
        let n_groups = n_ff / GROUP;
        let row = n_embd / 2;
        let mut quants = vec![0u8; n_ff * row];
        let mut group_scales = vec![0u8; n_groups * 2 * n_embd];
        let mut block_scales = vec![0u16; per_row * 2 * n_embd];
        for o in 0..n_embd {
            let (byte, shift) = ((o / 32) * 16 + o % 16, if o % 32 < 16 { 0 } else { 4 });
            for (b, blk) in blocks[o * per_row..(o + 1) * per_row].iter().enumerate() {
                block_scales[b * 2 * n_embd + o] = u16::from_le_bytes(blk.d);
                block_scales[b * 2 * n_embd + n_embd + o] = u16::from_le_bytes(blk.dmin);
                let (sc, mn) = unpack_scales_mins_k4(&blk.scales);
                for s in 0..8 {
                    let g = b * 8 + s;
                    group_scales[g * 2 * n_embd + o] = sc[s];
                    group_scales[g * 2 * n_embd + n_embd + o] = mn[s];
                }
                for c in 0..4 {
                    for l in 0..32 {
                        let v = blk.qs[32 * c + l];
                        let j_lo = b * QK_K + 64 * c + l;
                        quants[j_lo * row + byte] |= (v & 0x0f) << shift;
                        quants[(j_lo + 32) * row + byte] |= (v >> 4) << shift;
                    }
                }
            }
        }
        Ok(ExactQ4kDown {
            n_embd,
            n_ff,
            quants,
            group_scales,
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
        self.n_embd / 2
    }

    /// Bytes of one group's scales (`sc` and `m`).
    pub fn group_bytes(&self) -> usize {
        2 * self.n_embd
    }

    /// Bytes of one block's scales (`d` and `dmin`).
    pub fn block_bytes(&self) -> usize {
        4 * self.n_embd
    }

    /// Group `g`'s `sc` then `m` values.
    fn group_scales(&self, g: usize) -> &[u8] {
        &self.group_scales[g * 2 * self.n_embd..(g + 1) * 2 * self.n_embd]
    }

    /// Block `b`'s `d` then `dmin` values (f16 bits).
    fn block_scales(&self, b: usize) -> &[u16] {
        &self.block_scales[b * 2 * self.n_embd..(b + 1) * 2 * self.n_embd]
    }

    /// Total bytes of the copy.
    pub fn total_bytes(&self) -> usize {
        self.quants.len() + self.group_scales.len() + 2 * self.block_scales.len()
    }

    /// Bytes read by [`Self::accumulate`] over `ids`: quants of each id, `sc`/`m` of each run
    /// of consecutive ids in one group, `d`/`dmin` of each run in one block (the groups of a
    /// run of one block find them in cache).
    pub fn bytes_for(&self, ids: &[u32]) -> usize {
        ids.len() * self.row_bytes()
            + unit_runs(ids, GROUP) * self.group_bytes()
            + unit_runs(ids, BLOCK) * self.block_bytes()
    }

    /// `out[o] += Σ_k coefs[k] · down[o][ids[k]]`. `scratch` is resized. Ids are visited in
    /// order and grouped by runs within one 256-neuron block and, inside, one 32-neuron
    /// group, so ascending ids read each scale once; any order gives the same sum up to
    /// rounding.
    pub fn accumulate(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        scratch: &mut super::ExactDownScratch,
    ) -> Result<()> {
        super::check_accumulate(ids, coefs, out, self.n_embd, self.n_ff)?;
        #[cfg(target_arch = "x86_64")]
        if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
            self.accumulate_avx2(ids, coefs, out, scratch);
            return Ok(());
        }
        let mut k = 0;
        while k < ids.len() {
            let g = ids[k] as usize / GROUP;
            let end = run_end(ids, k, GROUP);
            group_scalar(GroupArgs {
                quants: &self.quants,
                row: self.row_bytes(),
                ids: &ids[k..end],
                coefs: &coefs[k..end],
                group_scales: self.group_scales(g),
                block_scales: self.block_scales(g * GROUP / BLOCK),
                hsum: coefs[k..end].iter().sum(),
                out,
                acc: &mut scratch.f32s,
            });
            k = end;
        }
        Ok(())
    }

    /// The AVX2 path: pieces of ids within one block ([`avx2::piece_end`]), each summed in
    /// integers up to its block scales ([`avx2::block`]). Only called after `active_isa()`
    /// reported AVX2+FMA+F16C, with ids checked against `n_ff` and `out.len() == n_embd`.
    #[cfg(target_arch = "x86_64")]
    fn accumulate_avx2(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        scratch: &mut super::ExactDownScratch,
    ) {
        let row = self.row_bytes();
        // The kernel walks the rows one pair after another, prefetching the rows
        // `avx2::AHEAD` pairs ahead, and each next run's and block's scales; start the first
        // ones here.
        for &j in ids.iter().take(2 * avx2::AHEAD) {
            prefetch(&self.quants[j as usize * row..][..row.min(PREFETCH_AHEAD)]);
        }
        if let Some(&j) = ids.first() {
            prefetch(self.group_scales(j as usize / GROUP));
            prefetch(self.block_scales(j as usize / BLOCK));
        }
        let mut k = 0;
        while k < ids.len() {
            let b = ids[k] as usize / BLOCK;
            let end = avx2::piece_end(ids, k);
            if let Some(&first) = ids.get(end) {
                let next_b = first as usize / BLOCK;
                if next_b != b {
                    prefetch(self.block_scales(next_b));
                }
            }
            avx2::block(avx2::BlockArgs {
                copy: self,
                block: b,
                ids: &ids[k..end],
                coefs: &coefs[k..end],
                next: &ids[end..(end + 2 * avx2::AHEAD).min(ids.len())],
                out,
                scratch,
            });
            k = end;
        }
    }
}

/// One group's share of the down projection, for the scalar reference.
struct GroupArgs<'a> {
    /// All neurons' quant rows (`row` bytes each).
    quants: &'a [u8],
    row: usize,
    /// Active neurons of this group and their coefficients.
    ids: &'a [u32],
    coefs: &'a [f32],
    /// The group's `sc` then `m` values (`n_embd` each).
    group_scales: &'a [u8],
    /// Its block's `d` then `dmin` values (f16 bits, `n_embd` each).
    block_scales: &'a [u16],
    /// Σ coefs.
    hsum: f32,
    out: &'a mut [f32],
    acc: &'a mut Vec<f32>,
}

/// Reference: `acc = Σ h_j q_j`, then `out += d·sc·acc − dmin·m·hsum` (the weights exactly,
/// coefficients unrounded).
fn group_scalar(a: GroupArgs<'_>) {
    let n = a.out.len();
    a.acc.clear();
    a.acc.resize(n, 0.0);
    for (&j, &h) in a.ids.iter().zip(a.coefs) {
        let r = &a.quants[j as usize * a.row..(j as usize + 1) * a.row];
        for (bytes, acc) in r.chunks_exact(16).zip(a.acc.chunks_exact_mut(32)) {
            for (i, &v) in bytes.iter().enumerate() {
                acc[i] += h * (v & 0x0f) as f32;
                acc[16 + i] += h * (v >> 4) as f32;
            }
        }
    }
    let (sc, m) = a.group_scales.split_at(n);
    let (d, dmin) = a.block_scales.split_at(n);
    for o in 0..n {
        let av = half::f16::from_bits(d[o]).to_f32() * sc[o] as f32;
        let bv = half::f16::from_bits(dmin[o]).to_f32() * m[o] as f32;
        a.out[o] += av * a.acc[o] - bv * a.hsum;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{prefetch, prefetch_line, run_end, ExactDownScratch};
    use super::{ExactQ4kDown, GROUP};

    /// Pairs of rows ahead of the pair being summed whose lines are prefetched (twice the
    /// first version's distance, whose sums took more instructions; at the 8B shape's
    /// 2 KiB rows, 16 KiB ahead, half of L1).
    pub(super) const AHEAD: usize = 4;

    /// A piece of ids within one block ([`piece_end`]), and where its sum goes.
    pub(super) struct BlockArgs<'a> {
        pub copy: &'a ExactQ4kDown,
        /// The block all `ids` lie in.
        pub block: usize,
        pub ids: &'a [u32],
        pub coefs: &'a [f32],
        /// The ids after the piece (at most `2·AHEAD`; their rows are prefetched).
        pub next: &'a [u32],
        pub out: &'a mut [f32],
        pub scratch: &'a mut ExactDownScratch,
    }

    /// `out += Σ_k coefs[k] · down[:, ids[k]]` over a piece of one block. Only called after
    /// `active_isa()` reported AVX2+FMA+F16C, by `accumulate_avx2`.
    pub(super) fn block(a: BlockArgs<'_>) {
        let n = a.out.len();
        assert!(
            n == a.copy.n_embd && n % 32 == 0 && !a.ids.is_empty(),
            "exact Q4_K down piece: {n} outputs, {} ids",
            a.ids.len()
        );
        assert_eq!(piece_end(a.ids, 0), a.ids.len(), "one piece");
        assert!(a
            .ids
            .iter()
            .all(|&j| j as usize / super::BLOCK == a.block && (j as usize) < a.copy.n_ff));
        // SAFETY: CPU support checked by the caller. Asserted above: every id lies in block
        // `block` of the copy, so each row `j·row .. (j+1)·row` lies inside `quants` and the
        // groups' and the block's scales exist; `out.len() == n_embd`, a multiple of 32,
        // `row = n_embd/2`, and the scratch buffers are sized to `n_embd` below: every tile
        // read or written lies inside those bounds. Prefetch addresses may lie anywhere.
        unsafe { block_impl(a) }
    }

    /// Most runs of ids in one group a piece holds (those of a block, for ascending ids).
    const MAX_RUNS: usize = super::BLOCK / GROUP;
    /// Most entries of a piece's row list: its ids, a padding entry per run, and the rows
    /// after the piece.
    const MAX_ROWS: usize = MAX_RUNS * GROUP + MAX_RUNS + 2 * AHEAD;

    /// The end of the piece of `ids` starting at `k`: ids in one block, in at most
    /// [`MAX_RUNS`] runs within one group of at most 32 ids each (more ids or runs only with
    /// repeated or unsorted ids), which keeps the kernel's integer sums in range.
    pub(super) fn piece_end(ids: &[u32], k: usize) -> usize {
        let block = ids[k] as usize / super::BLOCK;
        let mut end = k;
        for _ in 0..MAX_RUNS {
            if end == ids.len() || ids[end] as usize / super::BLOCK != block {
                break;
            }
            end = run_end(ids, end, GROUP).min(end + GROUP);
        }
        end
    }

    /// Each group run's coefficients are rounded to i8 with one scale `s` (the largest |h|
    /// of the run over 127), so every sum up to the scales is an exact integer. (One scale
    /// per block, as the dense path's Q8_K, made the sums cheaper to scale but rounded small
    /// groups coarsely: SmolLM2 `budget:2`'s KL to dense rose from 0.0274 to 0.0286 and its
    /// perplexity cost from +1.84% to +1.96% on GPL-3.) Per group run, pairs of rows are taken one after
    /// another, each walked from start to end 64 outputs (32 bytes of each row) at a time,
    /// so that memory is read row after row as the hardware prefetcher expects, with the
    /// rows `AHEAD` pairs ahead prefetched (into the next runs and pieces): the two rows'
    /// nibbles interleaved byte by byte and multiplied with `maddubs` (exact i16 sums of two
    /// weights), lanes put back in output order, added into i16 sums per output (pairs 0–7
    /// in one half of `sums16`, 8–15 in the other: |Σ| ≤ 8 · 2 · 15 · 127 = 30480). After
    /// the run, `acc += s·sc·Σ` and `mins += m·hsum` in f32 (|Σ| ≤ 2 · 30480, exact in
    /// f32); after the piece, `out += d·acc − dmin·mins`.
    ///
    /// The first version scaled each group's sums into `out` in f32 (`d·sc` formed per
    /// group and output) and walked 32 outputs at a time: on a 2-core Zen 3 VM its time at
    /// 50% of SmolLM2's down bytes was 0.92–1.00 of the dense down's.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_impl(a: BlockArgs<'_>) {
        let n = a.out.len();
        let row = a.copy.row_bytes();
        let q = a.copy.quants.as_ptr();
        // The piece's rows, run after run, each run padded to an even count with a zero
        // coefficient; then the rows after the piece (prefetched only). `runs`: (first
        // entry, ids, group, Σ coefficients, coefficient scale) of each run of ids in one
        // group (at most 32: more only with repeated ids).
        let mut rows = [0usize; MAX_ROWS];
        let mut hq = [0i8; MAX_ROWS];
        let mut runs = [(0usize, 0usize, 0usize, 0f32, 0f32); MAX_RUNS];
        let (mut n_rows, mut n_runs, mut k) = (0, 0, 0);
        while k < a.ids.len() {
            let end = run_end(a.ids, k, GROUP).min(k + GROUP);
            let hsum = a.coefs[k..end].iter().sum::<f32>();
            let amax = a.coefs[k..end].iter().fold(0f32, |m, h| m.max(h.abs()));
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let scale = amax / 127.0;
            runs[n_runs] = (n_rows, end - k, a.ids[k] as usize / GROUP, hsum, scale);
            n_runs += 1;
            for (&j, &h) in a.ids[k..end].iter().zip(&a.coefs[k..end]) {
                rows[n_rows] = j as usize * row;
                hq[n_rows] = (h * inv).round().clamp(-127.0, 127.0) as i8;
                n_rows += 1;
            }
            if (end - k) % 2 == 1 {
                rows[n_rows] = rows[n_rows - 1];
                n_rows += 1;
            }
            k = end;
        }
        for &j in a.next.iter().take(2 * AHEAD) {
            rows[n_rows] = j as usize * row;
            n_rows += 1;
        }
        // `i32s`: 2n i16 sums of a group run (n i32 slots); `f32s`: the piece's n sums
        // times `sc`, then its n sums of `m·hsum`.
        let ExactDownScratch { f32s, i32s } = a.scratch;
        i32s.clear();
        i32s.resize(n, 0);
        f32s.clear();
        f32s.resize(2 * n, 0.0);
        let sums16 = i32s.as_mut_ptr().cast::<i16>();
        let (acc, mins) = f32s.split_at_mut(n);
        let (acc, mins) = (acc.as_mut_ptr(), mins.as_mut_ptr());
        let low4 = _mm_set1_epi8(0x0f);
        let low4x2 = _mm256_set1_epi8(0x0f);
        let n64 = n - n % 64;
        for (r, &(first_row, n_ids, g, hsum, scale)) in runs[..n_runs].iter().enumerate() {
            let scales = a.copy.group_scales(g);
            // All of the next run's scales (or the next piece's first run's): they are read
            // right after its rows, and a fraction of them prefetched left the rest to stall
            // the scaling loop.
            let next_g = match runs[..n_runs].get(r + 1) {
                Some(&(_, _, g, _, _)) => Some(g),
                None => a.next.first().map(|&j| j as usize / GROUP),
            };
            if let Some(g) = next_g {
                prefetch(a.copy.group_scales(g));
            }
            let n_pairs = n_ids.div_ceil(2);
            for p in 0..n_pairs {
                let e = first_row + 2 * p;
                let c = (hq[e] as u8 as u16) | ((hq[e + 1] as u8 as u16) << 8);
                let coef = _mm256_set1_epi16(c as i16);
                let (r1, r2) = (rows[e], rows[e + 1]);
                // `AHEAD` pairs ahead in the piece, or the rows after it (the last pair's own
                // rows at the very end).
                let ahead = (e + 2 * AHEAD).min(n_rows - 2);
                let (f1, f2) = (rows[ahead], rows[ahead + 1]);
                let part = sums16.add(if p < 8 { 0 } else { n });
                let first = p % 8 == 0;
                let add = |ptr: *mut i16, v: __m256i| {
                    let ptr = ptr.cast::<__m256i>();
                    if first {
                        _mm256_storeu_si256(ptr, v);
                    } else {
                        _mm256_storeu_si256(ptr, _mm256_add_epi16(_mm256_loadu_si256(ptr), v));
                    }
                };
                let mut t = 0;
                while t < n64 {
                    if t % 128 == 0 {
                        prefetch_line(q.wrapping_add(f1 + t / 2));
                        prefetch_line(q.wrapping_add(f2 + t / 2));
                    }
                    // 32 bytes of each row: outputs t..t+16 (low nibbles) and t+16..t+32
                    // (high) in the first lane, t+32.. and t+48.. in the second.
                    let v1 = _mm256_loadu_si256(q.add(r1 + t / 2).cast());
                    let v2 = _mm256_loadu_si256(q.add(r2 + t / 2).cast());
                    let lo1 = _mm256_and_si256(v1, low4x2);
                    let lo2 = _mm256_and_si256(v2, low4x2);
                    let hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low4x2);
                    let hi2 = _mm256_and_si256(_mm256_srli_epi16(v2, 4), low4x2);
                    // Lanes of outputs [t..t+8 | t+32..t+40], [t+8.. | t+40..], ...
                    let s0 = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(lo1, lo2), coef);
                    let s1 = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(lo1, lo2), coef);
                    let s2 = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(hi1, hi2), coef);
                    let s3 = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(hi1, hi2), coef);
                    // ... put back in output order: t..t+16, t+16.., t+32.., t+48...
                    add(part.add(t), _mm256_permute2x128_si256::<0x20>(s0, s1));
                    add(part.add(t + 16), _mm256_permute2x128_si256::<0x20>(s2, s3));
                    add(part.add(t + 32), _mm256_permute2x128_si256::<0x31>(s0, s1));
                    add(part.add(t + 48), _mm256_permute2x128_si256::<0x31>(s2, s3));
                    t += 64;
                }
                if t < n {
                    // The last 32 outputs of an odd multiple of 32: 16 bytes of each row.
                    prefetch_line(q.wrapping_add(f1 + t / 2));
                    prefetch_line(q.wrapping_add(f2 + t / 2));
                    let v1 = _mm_loadu_si128(q.add(r1 + t / 2).cast());
                    let v2 = _mm_loadu_si128(q.add(r2 + t / 2).cast());
                    let lo1 = _mm_and_si128(v1, low4);
                    let lo2 = _mm_and_si128(v2, low4);
                    let hi1 = _mm_and_si128(_mm_srli_epi16(v1, 4), low4);
                    let hi2 = _mm_and_si128(_mm_srli_epi16(v2, 4), low4);
                    let x_ab =
                        _mm256_set_m128i(_mm_unpackhi_epi8(lo1, lo2), _mm_unpacklo_epi8(lo1, lo2));
                    let x_cd =
                        _mm256_set_m128i(_mm_unpackhi_epi8(hi1, hi2), _mm_unpacklo_epi8(hi1, hi2));
                    add(part.add(t), _mm256_maddubs_epi16(x_ab, coef));
                    add(part.add(t + 16), _mm256_maddubs_epi16(x_cd, coef));
                }
            }
            // acc += s·sc·Σ (both halves when more than 8 pairs), mins += m·hsum.
            let two = n_pairs > 8;
            let (sc, m) = scales.split_at(n);
            let hsum = _mm256_set1_ps(hsum);
            let s_v = _mm256_set1_ps(scale);
            let mut o = 0;
            while o < n {
                let mut s = _mm256_cvtepi16_epi32(_mm_loadu_si128(sums16.add(o).cast()));
                if two {
                    let s2 = _mm256_cvtepi16_epi32(_mm_loadu_si128(sums16.add(n + o).cast()));
                    s = _mm256_add_epi32(s, s2);
                }
                let scv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    sc.as_ptr().add(o).cast(),
                )));
                let ap = acc.add(o);
                _mm256_storeu_ps(
                    ap,
                    _mm256_fmadd_ps(
                        _mm256_mul_ps(s_v, scv),
                        _mm256_cvtepi32_ps(s),
                        _mm256_loadu_ps(ap),
                    ),
                );
                let mv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    m.as_ptr().add(o).cast(),
                )));
                let mp = mins.add(o);
                _mm256_storeu_ps(mp, _mm256_fmadd_ps(mv, hsum, _mm256_loadu_ps(mp)));
                o += 8;
            }
        }
        // out += d·acc − dmin·mins.
        let (d, dmin) = a.copy.block_scales(a.block).split_at(n);
        let mut o = 0;
        while o < n {
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(o).cast()));
            let dm = _mm256_cvtph_ps(_mm_loadu_si128(dmin.as_ptr().add(o).cast()));
            let op = a.out.as_mut_ptr().add(o);
            let v = _mm256_fmadd_ps(dv, _mm256_loadu_ps(acc.add(o)), _mm256_loadu_ps(op));
            _mm256_storeu_ps(op, _mm256_fnmadd_ps(dm, _mm256_loadu_ps(mins.add(o)), v));
            o += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::{assert_close, lcg, reference_and_bound};
    use super::*;

    /// A random Q4_K down (`n_embd` rows of `n_ff`) and its dequantized weights.
    fn random_down(n_embd: usize, n_ff: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        super::super::test_data::random_down(GgmlType::Q4_K, n_embd, n_ff, seed, |_, _| 0.2)
    }

    /// Both kernels against the dequantized original in f64, for sorted, unsorted and empty
    /// id lists, at widths with and without a 32-output tail after the 64-output tiles. The
    /// SIMD kernel rounds the coefficients to i8 (per run of at most 32 ids in one group), so
    /// its bound is Σ_j A_oj·q_oj · max|h in j's run| / 254 plus float rounding.
    #[test]
    fn accumulate_matches_dequantized_original() {
        for n_embd in [96, 128] {
            accumulate_matches_at(n_embd);
        }
    }

    fn accumulate_matches_at(n_embd: usize) {
        let n_ff = 512;
        let (data, deq) = random_down(n_embd, n_ff, 3);
        let copy = ExactQ4kDown::from_q4_k(GgmlType::Q4_K, n_embd, n_ff, &data).unwrap();
        // 4.625 bits per weight against the original's 4.5.
        assert_eq!(36 * copy.total_bytes(), 37 * data.len());
        let mut st = 9u64;
        let sorted: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 0).collect();
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        shuffled.swap(0, 40);
        // Groups alternating id by id (a run per id, more runs than a piece holds), and one
        // id repeated past a group's 32.
        let alternating: Vec<u32> = (0..100u32).map(|i| (i % 8) * 32 + i / 8).collect();
        let repeated: Vec<u32> = std::iter::repeat_n(5u32, 40).chain([6, 300, 5]).collect();
        // The rounding of the coefficients touches only the `A·q` part of each weight
        // `A·q − B` (the min term uses their exact sum), so the SIMD bound is taken over
        // `A·q = w + B`: where `A·q` and `B` nearly cancel, |w| alone is too small a bound
        // (an id repeated 40 times adds its rounding errors coherently).
        let a_q: Vec<f32> = (0..n_embd * n_ff)
            .map(|i| {
                let (o, j) = (i / n_ff, i % n_ff);
                let dmin = half::f16::from_bits(copy.block_scales(j / BLOCK)[n_embd + o]);
                let m = copy.group_scales(j / GROUP)[n_embd + o];
                deq[i] + dmin.to_f32() * m as f32
            })
            .collect();
        for ids in [sorted, shuffled, alternating, repeated, Vec::new()] {
            let coefs: Vec<f32> = ids.iter().map(|_| lcg(&mut st)).collect();
            // The largest |h| of each id's run (of at most 32) within one group.
            let mut coef_max = vec![0f64; ids.len()];
            let mut k = 0;
            while k < ids.len() {
                let end = run_end(&ids, k, GROUP).min(k + GROUP);
                let m = coefs[k..end]
                    .iter()
                    .fold(0f64, |m, h| m.max(h.abs() as f64));
                coef_max[k..end].fill(m);
                k = end;
            }
            let (want, _) = reference_and_bound(&deq, n_embd, n_ff, &ids, &coefs, &coef_max);
            let (_, bound) = reference_and_bound(&a_q, n_embd, n_ff, &ids, &coefs, &coef_max);
            let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
            let mut got = vec![0f32; n_embd];
            copy.accumulate(&ids, &coefs, &mut got, &mut Default::default())
                .unwrap();
            // The scalar kernel, run directly over the same runs.
            let mut got_scalar = vec![0f32; n_embd];
            let mut k = 0;
            let mut acc = Vec::new();
            while k < ids.len() {
                let g = ids[k] as usize / GROUP;
                let mut end = k;
                while end < ids.len() && ids[end] as usize / GROUP == g {
                    end += 1;
                }
                group_scalar(GroupArgs {
                    quants: &copy.quants,
                    row: copy.row_bytes(),
                    ids: &ids[k..end],
                    coefs: &coefs[k..end],
                    group_scales: copy.group_scales(g),
                    block_scales: copy.block_scales(g * GROUP / BLOCK),
                    hsum: coefs[k..end].iter().sum(),
                    out: &mut got_scalar,
                    acc: &mut acc,
                });
                k = end;
            }
            // The original scales, exactly: float rounding only.
            let tol = 1e-4 * scale;
            assert_close(&got_scalar, &got, &want, &bound, tol);
        }
    }

    #[test]
    fn bytes_count_quants_and_scale_groups() {
        let (n_embd, n_ff) = (32, 512);
        let (data, _) = random_down(n_embd, n_ff, 5);
        let copy = ExactQ4kDown::from_q4_k(GgmlType::Q4_K, n_embd, n_ff, &data).unwrap();
        // Ids 0, 1 (group 0), 40 (group 1), 2 (group 0 again: a second run), all in block 0:
        // 4 rows of 16 bytes, 3 group runs of 64 bytes, 1 block run of 128 bytes.
        assert_eq!(copy.bytes_for(&[0, 1, 40, 2]), 4 * 16 + 3 * 64 + 128);
        // 300 starts a run of block 1, 3 one more of block 0.
        assert_eq!(
            copy.bytes_for(&[0, 1, 40, 300, 3]),
            5 * 16 + 4 * 64 + 3 * 128
        );
        assert_eq!(copy.bytes_for(&[]), 0);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let (data, _) = random_down(32, 256, 7);
        assert!(matches!(
            ExactQ4kDown::from_q4_k(GgmlType::Q6_K, 32, 256, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(matches!(
            ExactQ4kDown::from_q4_k(GgmlType::Q4_K, 48, 256, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(ExactQ4kDown::from_q4_k(GgmlType::Q4_K, 64, 256, &data).is_err());
        let copy = ExactQ4kDown::from_q4_k(GgmlType::Q4_K, 32, 256, &data).unwrap();
        let mut out = vec![0f32; 32];
        assert!(matches!(
            copy.accumulate(&[256], &[1.0], &mut out, &mut Default::default()),
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            copy.accumulate(&[0], &[1.0, 2.0], &mut out, &mut Default::default()),
            Err(crate::Error::InvalidArgument(_))
        ));
    }
}
