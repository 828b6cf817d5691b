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

    /// `out[o] += Σ_k coefs[k] · down[o][ids[k]]`. `acc` is scratch (resized). Ids are visited
    /// in order and grouped by runs within one 32-neuron group, so ascending ids cost one
    /// scale pass per group; any order gives the same sum up to rounding.
    pub fn accumulate(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        scratch: &mut super::ExactDownScratch,
    ) -> Result<()> {
        super::check_accumulate(ids, coefs, out, self.n_embd, self.n_ff)?;
        let group = select_group_kernel();
        let row = self.row_bytes();
        let mut k = 0;
        while k < ids.len() {
            let g = ids[k] as usize / GROUP;
            let end = run_end(ids, k, GROUP);
            // The kernel walks the group's rows one pair after another, prefetching the
            // rows two pairs ahead (into the next group's first rows); start the first
            // group's rows, and each next group's scales, here.
            if k == 0 {
                for &j in ids.iter().take(4) {
                    prefetch(&self.quants[j as usize * row..][..row.min(PREFETCH_AHEAD)]);
                }
            }
            if let Some(&first) = ids.get(end) {
                let next_g = first as usize / GROUP;
                let sc = self.group_scales(next_g);
                prefetch(&sc[..sc.len().min(2 * PREFETCH_AHEAD)]);
                if next_g * GROUP / BLOCK != g * GROUP / BLOCK {
                    let bs = self.block_scales(next_g * GROUP / BLOCK);
                    prefetch(&bs[..bs.len().min(PREFETCH_AHEAD)]);
                }
            }
            let hsum: f32 = coefs[k..end].iter().sum();
            group(GroupArgs {
                quants: &self.quants,
                row,
                ids: &ids[k..end],
                coefs: &coefs[k..end],
                next: &ids[end..(end + 4).min(ids.len())],
                group_scales: self.group_scales(g),
                block_scales: self.block_scales(g * GROUP / BLOCK),
                hsum,
                out,
                acc: &mut scratch.f32s,
                sums: &mut scratch.i32s,
            });
            k = end;
        }
        Ok(())
    }
}

/// One group's share of the down projection.
struct GroupArgs<'a> {
    /// All neurons' quant rows (`row` bytes each).
    quants: &'a [u8],
    row: usize,
    /// Active neurons of this group and their coefficients.
    ids: &'a [u32],
    coefs: &'a [f32],
    /// The ids after the group's (at most 4; their rows are prefetched).
    next: &'a [u32],
    /// The group's `sc` then `m` values (`n_embd` each).
    group_scales: &'a [u8],
    /// Its block's `d` then `dmin` values (f16 bits, `n_embd` each).
    block_scales: &'a [u16],
    /// Σ coefs.
    hsum: f32,
    out: &'a mut [f32],
    /// Scratch (the scalar kernel's).
    acc: &'a mut Vec<f32>,
    /// Scratch (the SIMD kernel's).
    sums: &'a mut Vec<i32>,
}

type GroupKernel = fn(GroupArgs<'_>);

fn select_group_kernel() -> GroupKernel {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
        return avx2::group;
    }
    group_scalar
}

/// Reference: `acc = Σ h_j q_j`, then `out += d·sc·acc − dmin·m·hsum`.
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

    use super::GroupArgs;

    /// Only selected after `active_isa()` reported AVX2+FMA+F16C.
    pub(super) fn group(a: GroupArgs<'_>) {
        // SAFETY: CPU support checked by `select_group_kernel`. `accumulate` checked every id
        // against `n_ff`, so each row `j·row .. (j+1)·row` lies inside `quants`; `out.len()`
        // is `n_embd`, a multiple of 32, `row = n_embd/2`, and `group_scales` and
        // `block_scales` hold `2·n_embd` values each: every tile below reads and writes
        // inside those bounds.
        unsafe { group_impl(a) }
    }

    /// The group's coefficients are quantized to i8 (one scale per 32 of them, as the dense
    /// path quantizes its down input to 8 bits). Pairs of rows are taken one after another,
    /// each walked from start to end 32 outputs (16 bytes of each row) at a time, so that
    /// memory is read row after row, as the hardware prefetcher expects, with the rows two
    /// pairs ahead prefetched (the next group's first rows too): the two rows' nibbles are
    /// interleaved byte by byte and multiplied with `maddubs` (32 weights per instruction,
    /// exact integer sums) into i16 sums per output held in `sums` (at most 8 pairs, then
    /// added to i32 sums there too); after the last pairs, `out += d·sc·s·Σ`, and after the
    /// group `out −= dmin·m·hsum`, in f32.
    ///
    /// Walking all rows of the group side by side a tile at a time instead (sums in
    /// registers) read SmolLM2's 576-wide down copy from memory at 1.4–1.5× the dense
    /// down's time at 58% of its bytes (2-core Zen 3 VM).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_impl(a: GroupArgs<'_>) {
        let n = a.out.len();
        let q = a.quants.as_ptr();
        let h_sum = _mm256_set1_ps(a.hsum);
        // `sums`: n i32 totals, then n i16 sums of up to 8 pairs (n/2 i32 slots).
        a.sums.clear();
        a.sums.resize(n + n / 2, 0);
        let (total, part) = a.sums.split_at_mut(n);
        let total = total.as_mut_ptr();
        let part = part.as_mut_ptr().cast::<i16>();
        // Row offsets of the rows after the group (for prefetching only).
        let next: [usize; 4] = std::array::from_fn(|i| {
            a.next
                .get(i)
                .or(a.next.first())
                .or(a.ids.first())
                .map_or(0, |&j| j as usize * a.row)
        });
        // Up to 32 coefficients at a time share one i8 scale.
        for (ids, coefs) in a.ids.chunks(32).zip(a.coefs.chunks(32)) {
            let amax = coefs.iter().fold(0f32, |m, h| m.max(h.abs()));
            if amax == 0.0 {
                continue;
            }
            let scale = amax / 127.0;
            let inv = 127.0 / amax;
            // (row offset, i8 coefficient) per neuron, padded to an even count with a zero
            // coefficient; then the four rows after, for prefetching.
            let mut rows = [0usize; 36];
            let mut hq = [0i8; 32];
            for (k, (&j, &h)) in ids.iter().zip(coefs).enumerate() {
                rows[k] = j as usize * a.row;
                hq[k] = (h * inv).round().clamp(-127.0, 127.0) as i8;
            }
            let n_pairs = ids.len().div_ceil(2);
            if ids.len() % 2 == 1 {
                rows[ids.len()] = rows[ids.len() - 1];
                hq[ids.len()] = 0;
            }
            rows[2 * n_pairs..2 * n_pairs + 4].copy_from_slice(&next);
            let low4 = _mm_set1_epi8(0x0f);
            let mut p = 0;
            while p < n_pairs {
                // At most 8 pairs in i16: |Σ| ≤ 8 · 2 · 15 · 127 = 30480.
                let end = (p + 8).min(n_pairs);
                let first_part = p == 0;
                while p < end {
                    let c = (hq[2 * p] as u8 as u16) | ((hq[2 * p + 1] as u8 as u16) << 8);
                    let coef = _mm256_set1_epi16(c as i16);
                    let (r1, r2) = (rows[2 * p], rows[2 * p + 1]);
                    // Two pairs ahead, or the rows after the group.
                    let ahead = (2 * p + 4).min(2 * n_pairs + 2);
                    let (f1, f2) = (rows[ahead], rows[ahead + 1]);
                    // A group of one pair also fetches the two rows right after it, which
                    // no earlier pair did.
                    let (f3, f4) = if n_pairs == 1 {
                        (rows[2], rows[3])
                    } else {
                        (f1, f2)
                    };
                    let mut t = 0;
                    while t < n {
                        if t % 128 == 0 {
                            super::super::prefetch_line(q.wrapping_add(f1 + t / 2));
                            super::super::prefetch_line(q.wrapping_add(f2 + t / 2));
                            if n_pairs == 1 {
                                super::super::prefetch_line(q.wrapping_add(f3 + t / 2));
                                super::super::prefetch_line(q.wrapping_add(f4 + t / 2));
                            }
                        }
                        let v1 = _mm_loadu_si128(q.add(r1 + t / 2).cast());
                        let v2 = _mm_loadu_si128(q.add(r2 + t / 2).cast());
                        let lo1 = _mm_and_si128(v1, low4);
                        let lo2 = _mm_and_si128(v2, low4);
                        let hi1 = _mm_and_si128(_mm_srli_epi16(v1, 4), low4);
                        let hi2 = _mm_and_si128(_mm_srli_epi16(v2, 4), low4);
                        let x_ab = _mm256_set_m128i(
                            _mm_unpackhi_epi8(lo1, lo2),
                            _mm_unpacklo_epi8(lo1, lo2),
                        );
                        let x_cd = _mm256_set_m128i(
                            _mm_unpackhi_epi8(hi1, hi2),
                            _mm_unpacklo_epi8(hi1, hi2),
                        );
                        // Outputs t..t+16, then t+16..t+32, as i16.
                        let (pab, pcd) = (
                            part.add(t).cast::<__m256i>(),
                            part.add(t + 16).cast::<__m256i>(),
                        );
                        let ab = _mm256_maddubs_epi16(x_ab, coef);
                        let cd = _mm256_maddubs_epi16(x_cd, coef);
                        if p % 8 == 0 {
                            _mm256_storeu_si256(pab, ab);
                            _mm256_storeu_si256(pcd, cd);
                        } else {
                            _mm256_storeu_si256(pab, _mm256_add_epi16(_mm256_loadu_si256(pab), ab));
                            _mm256_storeu_si256(pcd, _mm256_add_epi16(_mm256_loadu_si256(pcd), cd));
                        }
                        t += 32;
                    }
                    p += 1;
                }
                // The pairs' i16 sums into the i32 totals; after the last pairs, the totals
                // times `A·s` into `out` (a group of at most 8 pairs never stores totals).
                let last = p == n_pairs;
                let s_v = _mm256_set1_ps(scale);
                let mut o = 0;
                while o < n {
                    let mut s = _mm256_cvtepi16_epi32(_mm_loadu_si128(part.add(o).cast()));
                    let tp = total.add(o).cast::<__m256i>();
                    if !first_part {
                        s = _mm256_add_epi32(_mm256_loadu_si256(tp), s);
                    }
                    if last {
                        let av = scale_at(a.block_scales, a.group_scales, o);
                        let x = _mm256_mul_ps(s_v, _mm256_cvtepi32_ps(s));
                        let op = a.out.as_mut_ptr().add(o);
                        _mm256_storeu_ps(op, _mm256_fmadd_ps(av, x, _mm256_loadu_ps(op)));
                    } else {
                        _mm256_storeu_si256(tp, s);
                    }
                    o += 8;
                }
            }
        }
        // The min term uses the exact coefficient sum.
        let mut o = 0;
        while o < n {
            let bv = scale_at(a.block_scales, a.group_scales, n + o);
            let op = a.out.as_mut_ptr().add(o);
            _mm256_storeu_ps(op, _mm256_fnmadd_ps(bv, h_sum, _mm256_loadu_ps(op)));
            o += 8;
        }
    }

    /// `f16(block[i..i+8]) · group[i..i+8]` in f32: `A = d·sc` (from `i < n_embd`) or `B = dmin·m`
    /// (from `n_embd + i`) of 8 outputs, formed as the dequantizer forms them.
    ///
    /// # Safety
    /// AVX2 and F16C available; `i + 8 ≤ block.len()` and `i + 8 ≤ group.len()`.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scale_at(block: &[u16], group: &[u8], i: usize) -> __m256 {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(block.as_ptr().add(i).cast()));
        let s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
            group.as_ptr().add(i).cast(),
        )));
        _mm256_mul_ps(d, s)
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
    /// id lists. The SIMD kernel rounds the coefficients to i8 (per ≤32 of one group), so its
    /// bound is Σ_j |w_oj| · max|h in j's group| / 254 plus float rounding.
    #[test]
    fn accumulate_matches_dequantized_original() {
        // 96 outputs: three 32-output tiles.
        let (n_embd, n_ff) = (96, 512);
        let (data, deq) = random_down(n_embd, n_ff, 3);
        let copy = ExactQ4kDown::from_q4_k(GgmlType::Q4_K, n_embd, n_ff, &data).unwrap();
        // 4.625 bits per weight against the original's 4.5.
        assert_eq!(36 * copy.total_bytes(), 37 * data.len());
        let mut st = 9u64;
        let sorted: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 0).collect();
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        shuffled.swap(0, 40);
        for ids in [sorted, shuffled, Vec::new()] {
            let coefs: Vec<f32> = ids.iter().map(|_| lcg(&mut st)).collect();
            let mut group_max = vec![0f64; n_ff / GROUP];
            for (&j, &h) in ids.iter().zip(&coefs) {
                let g = j as usize / GROUP;
                group_max[g] = group_max[g].max(h.abs() as f64);
            }
            let coef_max: Vec<f64> = ids.iter().map(|&j| group_max[j as usize / GROUP]).collect();
            let (want, bound) = reference_and_bound(&deq, n_embd, n_ff, &ids, &coefs, &coef_max);
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
                    next: &[],
                    group_scales: copy.group_scales(g),
                    block_scales: copy.block_scales(g * GROUP / BLOCK),
                    hsum: coefs[k..end].iter().sum(),
                    out: &mut got_scalar,
                    acc: &mut acc,
                    sums: &mut Vec::new(),
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
