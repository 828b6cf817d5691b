//! An input-major copy of a Q5_0 `ffn_gate` / `ffn_up` that keeps the model's own 5-bit quants,
//! so that a zeroed FFN-input entry (TEAL input sparsity) skips its weight column.
//!
//! In a Q5_0 matrix (`n_rows` neurons of `n_cols` inputs), weight `(i, j)` is `d·(q − 16)` with
//! a 5-bit `q` and one f16 `d` per neuron and block of 32 inputs. The copy stores, per input
//! block `b`, the `n_rows` scales `d[i][b]` (the original f16 bits: no rounding at all), then
//! per input `j` of the block one contiguous *column* holding the `n_rows` quants `q[i][j]`
//! packed as in Q5_0 (per 32 neurons: 16 bytes of low nibbles, 4 bytes of high bits). It has
//! exactly the original's bytes (22 per 32 weights) and gives exactly the original weights.
//!
//! The matvec over the input quantized to Q8_0 (`x_j = dx_b · xq_j`, as the dense path does)
//! reads only the columns with `xq_j ≠ 0` and the scales of blocks with at least one of them:
//! `out[i] = Σ_b d[i][b] · dx_b · (Σ_{j∈b, xq_j≠0} q[i][j] · xq_j − 16 · Σ_{j∈b} xq_j)`,
//! the dense Q5_0·Q8_0 dot product's value up to float summation order.

use crate::quant::blocks::{cast_blocks, BlockQ5_0, BlockQ8_0};
use crate::quant::GgmlType;
use crate::sparsity::rows::Splitter;
use crate::{bail, Result};

/// Inputs per block (a Q5_0 / Q8_0 block).
pub const BLOCK: usize = 32;
/// Neurons per tile of a column: 16 bytes of low nibbles and 4 bytes of high bits.
pub const TILE: usize = 32;
const TILE_BYTES: usize = 20;

/// The exact input-major copy of one Q5_0 weight matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMajorQ5_0 {
    n_rows: usize,
    n_cols: usize,
    /// `n_cols` columns of `n_rows / 32` tiles. In tile `t` of column `j`, byte `k < 16`
    /// holds the low 4 bits of neuron `32t + k` (low nibble) and `32t + 16 + k` (high
    /// nibble); bytes 16..20 are a little-endian u32 whose bit `k` is bit 4 of neuron `32t + k`.
    quants: Vec<u8>,
    /// Per input block: the `n_rows` neuron scales, f16 bits.
    scales: Vec<u16>,
}

/// The active columns of one input block: the Q8_0 scale, the columns and their i8 values,
/// `Σ xq` over the block.
#[derive(Clone, Debug, Default)]
struct ActiveBlock {
    block: usize,
    dx: f32,
    cols: Vec<usize>,
    xq: Vec<i8>,
    xsum: i32,
}

/// Reusable buffers for [`InputMajorQ5_0::matvec`].
#[derive(Debug, Default)]
pub struct InputMajorScratch {
    blocks: Vec<ActiveBlock>,
    n_blocks: usize,
}

impl InputMajorQ5_0 {
    /// Build the copy from a Q5_0 matrix of `n_rows` rows of `n_cols`. `Unsupported` when the
    /// type is not Q5_0 or `n_rows` is not a multiple of 32.
    pub fn from_q5_0(ty: GgmlType, n_rows: usize, n_cols: usize, data: &[u8]) -> Result<Self> {
        if ty != GgmlType::Q5_0 {
            bail!(Unsupported, "input-major copy of a {ty} matrix");
        }
        if n_rows % TILE != 0 || n_cols % BLOCK != 0 || n_rows == 0 {
            bail!(
                Unsupported,
                "input-major copy of a {n_rows}×{n_cols} matrix (needs rows and columns multiples of 32)"
            );
        }
        let blocks = cast_blocks::<BlockQ5_0>(data)?;
        let per_row = n_cols / BLOCK;
        if blocks.len() != n_rows * per_row {
            bail!(
                Format,
                "Q5_0 matrix holds {} blocks, expected {}",
                blocks.len(),
                n_rows * per_row
            );
        }
        let col = n_rows / TILE * TILE_BYTES;
        let mut quants = vec![0u8; n_cols * col];
        let mut scales = vec![0u16; per_row * n_rows];
        for i in 0..n_rows {
            let (t, k) = (i / TILE, i % TILE);
            let (byte, shift) = (t * TILE_BYTES + k % 16, if k < 16 { 0 } else { 4 });
            let hbyte = t * TILE_BYTES + 16 + k / 8;
            for (b, blk) in blocks[i * per_row..(i + 1) * per_row].iter().enumerate() {
                scales[b * n_rows + i] = u16::from_le_bytes(blk.d);
                let qh = blk.qh();
                for l in 0..BLOCK {
                    let lo = if l < 16 {
                        blk.qs[l] & 0x0f
                    } else {
                        blk.qs[l - 16] >> 4
                    };
                    let hi = ((qh >> l) & 1) as u8;
                    let c = &mut quants[(b * BLOCK + l) * col..(b * BLOCK + l + 1) * col];
                    c[byte] |= lo << shift;
                    c[hbyte] |= hi << (k % 8);
                }
            }
        }
        Ok(InputMajorQ5_0 {
            n_rows,
            n_cols,
            quants,
            scales,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Bytes of one column's quants.
    pub fn col_bytes(&self) -> usize {
        self.n_rows / TILE * TILE_BYTES
    }

    /// Bytes of one input block's scales.
    pub fn block_scale_bytes(&self) -> usize {
        2 * self.n_rows
    }

    /// Total bytes of the copy (equal to the Q5_0 original's).
    pub fn total_bytes(&self) -> usize {
        self.quants.len() + 2 * self.scales.len()
    }

    /// Bytes [`Self::matvec`] reads for the Q8_0-quantized input `xq`: the quants of each
    /// column with a nonzero entry and the scales of each block holding one.
    pub fn bytes_for(&self, xq: &[u8]) -> Result<usize> {
        let blocks = self.input_blocks(xq)?;
        Ok(blocks
            .iter()
            .map(|b| {
                let n = b.qs.iter().filter(|&&v| v != 0).count();
                if n == 0 {
                    0
                } else {
                    self.block_scale_bytes() + n * self.col_bytes()
                }
            })
            .sum())
    }

    fn input_blocks<'x>(&self, xq: &'x [u8]) -> Result<&'x [BlockQ8_0]> {
        let blocks = cast_blocks::<BlockQ8_0>(xq)?;
        if blocks.len() * BLOCK != self.n_cols {
            bail!(
                InvalidArgument,
                "input-major matvec: {} input blocks for {} columns",
                blocks.len(),
                self.n_cols
            );
        }
        Ok(blocks)
    }

    /// `out[i] = Σ_j w[i][j] · x_j` over the columns with a nonzero `xq_j` (`xq`: the input as
    /// Q8_0 blocks, as [`super::rows::quantize_input`] makes it for a Q5_0 matrix), split by
    /// neuron tiles over `exec`'s workers.
    pub fn matvec(
        &self,
        xq: &[u8],
        out: &mut [f32],
        scratch: &mut InputMajorScratch,
        exec: &dyn Splitter,
    ) -> Result<()> {
        if out.len() != self.n_rows {
            bail!(
                InvalidArgument,
                "input-major matvec: output {} for {} rows",
                out.len(),
                self.n_rows
            );
        }
        let blocks = self.input_blocks(xq)?;
        let s = scratch;
        s.blocks.resize_with(blocks.len(), ActiveBlock::default);
        s.n_blocks = 0;
        for (b, blk) in blocks.iter().enumerate() {
            if blk.qs.iter().all(|&v| v == 0) {
                continue;
            }
            let a = &mut s.blocks[s.n_blocks];
            s.n_blocks += 1;
            a.block = b;
            a.dx = blk.d();
            a.cols.clear();
            a.xq.clear();
            a.xsum = 0;
            for (l, &v) in blk.qs.iter().enumerate() {
                if v != 0 {
                    a.cols.push((b * BLOCK + l) * self.col_bytes());
                    a.xq.push(v);
                    a.xsum += i32::from(v);
                }
            }
        }
        let active = &s.blocks[..s.n_blocks];
        let kernel = select_kernel();
        let n_tiles = self.n_rows / TILE;
        let n_tasks = exec.n_workers().min(n_tiles.div_ceil(8)).max(1);
        if n_tasks == 1 {
            kernel(self, active, 0..n_tiles, out);
            return Ok(());
        }
        let per = n_tiles.div_ceil(n_tasks);
        let outs: Vec<std::sync::Mutex<&mut [f32]>> = out
            .chunks_mut(per * TILE)
            .map(std::sync::Mutex::new)
            .collect();
        exec.run(outs.len(), &|t: usize| {
            let mut o = outs[t].lock().unwrap_or_else(|p| p.into_inner());
            let tiles = t * per..((t + 1) * per).min(n_tiles);
            kernel(self, active, tiles, &mut o);
        });
        Ok(())
    }
}

/// Computes `out` (the neurons of `tiles`, `out[0]` being neuron `32·tiles.start`) over the
/// active blocks.
type Kernel = fn(&InputMajorQ5_0, &[ActiveBlock], std::ops::Range<usize>, &mut [f32]);

fn select_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
        return avx2::tiles;
    }
    tiles_scalar
}

/// Reference kernel: integer sums per neuron and block, then the block's scales.
fn tiles_scalar(
    m: &InputMajorQ5_0,
    active: &[ActiveBlock],
    tiles: std::ops::Range<usize>,
    out: &mut [f32],
) {
    out.fill(0.0);
    let i0 = tiles.start * TILE;
    for a in active {
        let sc = &m.scales[a.block * m.n_rows..(a.block + 1) * m.n_rows];
        for t in tiles.clone() {
            for k in 0..TILE {
                let mut acc = 0i32;
                for (&c, &x) in a.cols.iter().zip(&a.xq) {
                    let tile = &m.quants[c + t * TILE_BYTES..c + (t + 1) * TILE_BYTES];
                    let lo = (tile[k % 16] >> if k < 16 { 0 } else { 4 }) & 0x0f;
                    let hi = (tile[16 + k / 8] >> (k % 8)) & 1;
                    acc += i32::from(lo | (hi << 4)) * i32::from(x);
                }
                let i = t * TILE + k;
                let d = half::f16::from_bits(sc[i]).to_f32();
                out[i - i0] += d * a.dx * (acc - 16 * a.xsum) as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ActiveBlock, InputMajorQ5_0, TILE, TILE_BYTES};

    /// The column offsets of the group of pairs after `p1` in block `ai` (or the first group
    /// of the next block).
    fn next_group(active: &[ActiveBlock], ai: usize, p1: usize) -> &[usize] {
        let a = &active[ai];
        if 2 * p1 < a.cols.len() {
            &a.cols[2 * p1..(2 * p1 + 8).min(a.cols.len())]
        } else {
            active
                .get(ai + 1)
                .map_or(&[], |b| &b.cols[..8.min(b.cols.len())])
        }
    }

    /// Only selected after `active_isa()` reported AVX2+FMA+F16C.
    pub(super) fn tiles(
        m: &InputMajorQ5_0,
        active: &[ActiveBlock],
        tiles: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        // SAFETY: CPU support checked by `select_kernel`. Every column offset in `active` is
        // `j · col_bytes` for an input `j < n_cols` (built by `matvec` from the checked input
        // blocks), so `c + t·20 + 20 ≤ quants.len()` for every tile `t < n_rows/32`; block
        // indices are `< n_cols/32`, so each scale load `block·n_rows + 32t + 8k + 8` lies
        // inside `scales`; `out` holds `32·tiles.len()` values (the caller's chunk).
        unsafe { tiles_impl(m, active, tiles, out) }
    }

    /// The 5-bit quants (u8, 0..31) of one column's tile at `p`: neurons 0..15 and 16..31.
    ///
    /// # Safety
    /// AVX2 available; `p .. p + 20` readable.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_tile(p: *const u8) -> (__m128i, __m128i) {
        let low4 = _mm_set1_epi8(0x0f);
        let shuf = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        );
        let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let v = _mm_loadu_si128(p.cast());
        let qh = std::ptr::read_unaligned(p.add(16).cast::<u32>());
        // Bit k of qh → byte k = 0x10 when set.
        let hb = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
        let hb = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_and_si256(hb, bits), bits),
            _mm256_set1_epi8(0x10),
        );
        (
            _mm_or_si128(_mm_and_si128(v, low4), _mm256_castsi256_si128(hb)),
            _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16(v, 4), low4),
                _mm256_extracti128_si256(hb, 1),
            ),
        )
    }

    /// Per tile of 32 neurons and block: active columns taken in pairs, their 5-bit quants
    /// (u8, 0..31) interleaved byte by byte and multiplied with the pair's i8 inputs by
    /// `maddubs` (exact i16 sums, at most 4 pairs before widening to i32), then
    /// `out += d · dx · (Σ − 16·Σxq)` in f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiles_impl(
        m: &InputMajorQ5_0,
        active: &[ActiveBlock],
        tiles: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        out.fill(0.0);
        let q = m.quants.as_ptr();
        let n_tiles = tiles.len();
        // Per neuron of this task: the integer sum of the current block.
        let mut acc = vec![_mm256_setzero_si256(); 4 * n_tiles];
        for (ai, a) in active.iter().enumerate() {
            acc.fill(_mm256_setzero_si256());
            let n = a.cols.len();
            let n_pairs = n.div_ceil(2);
            let mut cols = [0usize; 32];
            let mut xq = [0i8; 32];
            cols[..n].copy_from_slice(&a.cols);
            xq[..n].copy_from_slice(&a.xq);
            if n % 2 == 1 {
                cols[n] = cols[n - 1];
                xq[n] = 0;
            }
            // Up to 4 pairs (8 columns, read as 8 sequential streams) at a time, each tile's
            // i16 sums then widened into the i32 sums.
            let mut p0 = 0;
            while p0 < n_pairs {
                // At most 4 pairs in i16: |Σ| ≤ 4 · 2 · 31 · 127 = 31496.
                let p1 = (p0 + 4).min(n_pairs);
                // Columns are short streams (20 bytes per tile of 32 neurons) that the hardware
                // prefetcher does not pick up in time: the next group's are loaded while this
                // one is computed, tile by tile (a burst of prefetches for whole columns
                // would stall on the few outstanding misses a core can have).
                let mut next = [0usize; 8];
                let nx = next_group(active, ai, p1);
                next[..nx.len()].copy_from_slice(nx);
                let next = &next[..nx.len()];
                let mut px = [_mm256_setzero_si256(); 4];
                for (k, p) in (p0..p1).enumerate() {
                    let c = (xq[2 * p] as u8 as u16) | ((xq[2 * p + 1] as u8 as u16) << 8);
                    px[k] = _mm256_set1_epi16(c as i16);
                }
                for ti in 0..n_tiles {
                    let off = (tiles.start + ti) * TILE_BYTES;
                    for &c in next {
                        _mm_prefetch::<_MM_HINT_T0>(q.add(c + off).cast());
                    }
                    let (mut ab, mut cd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for (k, p) in (p0..p1).enumerate() {
                        let (a_lo, a_hi) = load_tile(q.add(cols[2 * p] + off));
                        let (b_lo, b_hi) = load_tile(q.add(cols[2 * p + 1] + off));
                        let x_ab = _mm256_set_m128i(
                            _mm_unpackhi_epi8(a_lo, b_lo),
                            _mm_unpacklo_epi8(a_lo, b_lo),
                        );
                        let x_cd = _mm256_set_m128i(
                            _mm_unpackhi_epi8(a_hi, b_hi),
                            _mm_unpacklo_epi8(a_hi, b_hi),
                        );
                        ab = _mm256_add_epi16(ab, _mm256_maddubs_epi16(x_ab, px[k]));
                        cd = _mm256_add_epi16(cd, _mm256_maddubs_epi16(x_cd, px[k]));
                    }
                    let r = &mut acc[4 * ti..4 * ti + 4];
                    r[0] =
                        _mm256_add_epi32(r[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(ab)));
                    r[1] = _mm256_add_epi32(
                        r[1],
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(ab, 1)),
                    );
                    r[2] =
                        _mm256_add_epi32(r[2], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(cd)));
                    r[3] = _mm256_add_epi32(
                        r[3],
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(cd, 1)),
                    );
                }
                p0 = p1;
            }
            // out += d · dx · (Σ − 16·Σxq).
            let xsum16 = _mm256_set1_epi32(16 * a.xsum);
            let dx = _mm256_set1_ps(a.dx);
            let sc = m
                .scales
                .as_ptr()
                .add(a.block * m.n_rows + tiles.start * TILE);
            for (k, acc_k) in acc.iter().enumerate() {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(8 * k).cast()));
                let v = _mm256_mul_ps(dx, _mm256_cvtepi32_ps(_mm256_sub_epi32(*acc_k, xsum16)));
                let op = out.as_mut_ptr().add(8 * k);
                _mm256_storeu_ps(op, _mm256_fmadd_ps(d, v, _mm256_loadu_ps(op)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize::quantize_row;
    use crate::quant::{dequantize_row, quantize_activations};
    use crate::sparsity::rows::Serial;

    fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A Q5_0 matrix of `n_rows` × `n_cols` from `weights`, and its dequantized values.
    fn q5_0(weights: &[f32], n_rows: usize, n_cols: usize) -> (Vec<u8>, Vec<f32>) {
        let rb = GgmlType::Q5_0.row_bytes(n_cols as u64).unwrap() as usize;
        let mut data = vec![0u8; n_rows * rb];
        let mut deq = vec![0f32; n_rows * n_cols];
        for i in 0..n_rows {
            let r = &mut data[i * rb..(i + 1) * rb];
            quantize_row(GgmlType::Q5_0, &weights[i * n_cols..(i + 1) * n_cols], r).unwrap();
            dequantize_row(GgmlType::Q5_0, r, &mut deq[i * n_cols..(i + 1) * n_cols]).unwrap();
        }
        (data, deq)
    }

    struct Splits(usize);
    impl Splitter for Splits {
        fn n_workers(&self) -> usize {
            self.0
        }
        fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
            (0..n_tasks).rev().for_each(f);
        }
    }

    /// Both kernels against the dequantized original times the dequantized Q8_0 input, in
    /// f64: the same value up to float rounding, whatever entries are zero.
    #[test]
    fn matvec_matches_dequantized_original() {
        let (n_rows, n_cols) = (96, 128);
        let mut st = 3u64;
        // Random weights, plus extreme rows: all at the largest magnitude of either sign, and
        // all zero (d = 0).
        let mut w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut st) * 0.3).collect();
        for c in 0..n_cols {
            w[5 * n_cols + c] = if c % 2 == 0 { 1.0 } else { -1.0 };
            w[6 * n_cols + c] = -1.0;
            w[7 * n_cols + c] = 0.0;
        }
        let (data, deq) = q5_0(&w, n_rows, n_cols);
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &data).unwrap();
        assert_eq!(copy.total_bytes(), data.len());
        let mut sc = InputMajorScratch::default();
        for case in 0..5 {
            let mut x: Vec<f32> = (0..n_cols).map(|_| lcg(&mut st) * 2.0).collect();
            match case {
                // Every other entry zero, and the second block entirely zero.
                1 => {
                    x.iter_mut().step_by(2).for_each(|v| *v = 0.0);
                    x[32..64].fill(0.0);
                }
                // One active entry (odd count per block), at full i8 scale.
                2 => {
                    x.fill(0.0);
                    x[77] = -3.0;
                }
                // Extreme inputs: ±127 after quantization everywhere.
                3 => x
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = if j % 3 == 0 { -1.0 } else { 1.0 }),
                // All zero: nothing read.
                4 => x.fill(0.0),
                _ => {}
            }
            let mut xq = vec![0u8; GgmlType::Q8_0.row_bytes(n_cols as u64).unwrap() as usize];
            quantize_activations(GgmlType::Q8_0, &x, &mut xq).unwrap();
            let mut xd = vec![0f32; n_cols];
            dequantize_row(GgmlType::Q8_0, &xq, &mut xd).unwrap();
            let want: Vec<f64> = (0..n_rows)
                .map(|i| {
                    (0..n_cols)
                        .map(|j| deq[i * n_cols + j] as f64 * xd[j] as f64)
                        .sum()
                })
                .collect();
            let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
            let mut got = vec![f32::NAN; n_rows];
            copy.matvec(&xq, &mut got, &mut sc, &Serial).unwrap();
            let mut split = vec![f32::NAN; n_rows];
            copy.matvec(&xq, &mut split, &mut sc, &Splits(2)).unwrap();
            let mut scalar = vec![f32::NAN; n_rows];
            tiles_scalar(
                &copy,
                &sc.blocks[..sc.n_blocks],
                0..n_rows / TILE,
                &mut scalar,
            );
            for i in 0..n_rows {
                for (what, v) in [("simd", got[i]), ("split", split[i]), ("scalar", scalar[i])] {
                    assert!(
                        (v as f64 - want[i]).abs() < 1e-5 * scale,
                        "case {case} {what} row {i}: {v} vs {}",
                        want[i]
                    );
                }
            }
            let xq_blocks = cast_blocks::<BlockQ8_0>(&xq).unwrap();
            let nz = xq_blocks
                .iter()
                .flat_map(|b| b.qs.iter())
                .filter(|&&v| v != 0)
                .count();
            let nb = xq_blocks
                .iter()
                .filter(|b| b.qs.iter().any(|&v| v != 0))
                .count();
            assert_eq!(
                copy.bytes_for(&xq).unwrap(),
                nz * n_rows * 20 / 32 + nb * 2 * n_rows,
                "case {case}"
            );
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let w = vec![0.1f32; 64 * 64];
        let (data, _) = q5_0(&w, 64, 64);
        assert!(matches!(
            InputMajorQ5_0::from_q5_0(GgmlType::Q4_0, 64, 64, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(matches!(
            InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, 48, 64, &data),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, 96, 64, &data).is_err());
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, 64, 64, &data).unwrap();
        let xq = vec![0u8; 34];
        let mut out = vec![0f32; 64];
        let mut sc = InputMajorScratch::default();
        assert!(matches!(
            copy.matvec(&xq, &mut out, &mut sc, &Serial),
            Err(crate::Error::InvalidArgument(_))
        ));
        let xq = vec![0u8; 68];
        assert!(matches!(
            copy.matvec(&xq, &mut out[..32], &mut sc, &Serial),
            Err(crate::Error::InvalidArgument(_))
        ));
    }
}
