//! An input-major copy of a Q5_0 `ffn_gate` / `ffn_up` that keeps the model's own 5-bit quants,
//! so that a zeroed FFN-input entry (TEAL input sparsity) skips its weight column.
//!
//! In a Q5_0 matrix (`n_rows` neurons of `n_cols` inputs), weight `(i, j)` is `d·(q − 16)` with
//! a 5-bit `q` and one f16 `d` per neuron and block of 32 inputs. The copy stores, per input
//! block `b`, the `n_rows` scales `d[i][b]` (the original f16 bits: no rounding at all), then
//! per input `j` of the block one contiguous *column* holding the `n_rows` quants `q[i][j]`,
//! in tiles of 64 neurons of 40 bytes: 32 bytes of nibbles (the low 4 bits of two neurons per
//! byte) and two 32-bit masks of their fifth bits (see [`tile_position`] for which neuron sits
//! where). It has exactly the original's bytes (22 per 32 weights) and gives exactly the
//! original weights.
//!
//! The matvec over the input quantized to Q8_0 (`x_j = dx_b · xq_j`, as the dense path does)
//! reads only the columns with `xq_j ≠ 0` and the scales of blocks with at least one of them:
//! `out[i] = Σ_b d[i][b] · dx_b · (Σ_{j∈b, xq_j≠0} q[i][j] · xq_j − 16 · Σ_{j∈b} xq_j)`,
//! the dense Q5_0·Q8_0 dot product's value up to float summation order (the integer sums per
//! neuron and block are exact in every kernel).
//!
//! Kernels ([`InputMajorKernel`]): a scalar reference; and for x86-64 one SIMD kernel in two
//! instruction sets (`input_major/x86.rs`): per tile of 64 neurons and input block, the kept
//! columns are taken four at a time, their quants interleaved byte-wise per neuron and
//! multiplied with the four inputs by a 4-way u8·i8 dot product (`vpdpbusd` with AVX-512
//! VNNI, `maddubs` + `madd` with AVX2) into per-neuron i32 sums held in registers across the
//! block's columns, then one scale multiply per neuron and block.
//!
//! The tile layout is chosen for that interleave: in a 32-byte load of a tile, byte `k`'s low
//! nibbles (then its high nibbles) give, after the two unpack steps, neurons in natural order
//! in the 32-bit lanes; so the kernels need no permutation of scales or outputs.

use std::ops::Range;
use std::sync::Arc;

use crate::gguf::{reason_not_to_copy, HugePageCopy};
use crate::quant::blocks::{cast_blocks, BlockQ5_0, BlockQ8_0};
use crate::quant::GgmlType;
use crate::sparsity::rows::Splitter;
use crate::{bail, Result};

#[cfg(target_arch = "x86_64")]
mod x86;

/// Inputs per block (a Q5_0 / Q8_0 block).
pub const BLOCK: usize = 32;
/// Neurons per tile of a column.
pub const TILE: usize = 64;
/// Bytes per tile of a column: 32 bytes of nibbles, two u32 masks of fifth bits.
const TILE_BYTES: usize = 40;
/// Columns per step of the SIMD kernels (the kept columns are padded to a multiple of it).
const GROUP: usize = 4;

/// Where neuron `r` (`r < 64`) of a tile sits: `(byte, nibble shift, mask word)`. Byte
/// `k < 32` holds neuron `π(k)` in its low nibble and `32 + π(k)` in its high nibble, with
/// `π(16h + 4g + p) = 8g + 4h + p` (`h < 2`, `g < 4`, `p < 4`); bit `k` of the little-endian
/// u32 at byte `32` (low nibbles) or `36` (high nibbles) is that neuron's fifth bit.
///
/// Why `π`: the SIMD kernels unpack four columns' bytes with `unpack{lo,hi}_epi8` then
/// `unpack{lo,hi}_epi16`, which gathers bytes `4g..4g+4` of each 128-bit half into register
/// `g`; with `π` those are neurons `8g..8g+8`, in order.
pub fn tile_position(r: usize) -> (usize, u32, usize) {
    let (half_nibble, rr) = (r / 32, r % 32);
    let (g, w) = (rr / 8, rr % 8);
    let (h, p) = (w / 4, w % 4);
    (
        16 * h + 4 * g + p,
        4 * half_nibble as u32,
        32 + 4 * half_nibble,
    )
}

/// The exact input-major copy of one Q5_0 weight matrix.
#[derive(Clone)]
pub struct InputMajorQ5_0 {
    n_rows: usize,
    n_cols: usize,
    /// The quants, then the scales: `n_cols` columns of `n_rows / 64` tiles of
    /// [`TILE_BYTES`] (layout: [`tile_position`]); then per input block the `n_rows` neuron
    /// scales, f16 bits, little-endian.
    store: Store,
}

/// Where a copy's bytes live: its own buffer, or a range of a region in 2 MiB pages that
/// several copies share ([`place_in_huge_pages`]).
#[derive(Clone)]
enum Store {
    Own(Vec<u8>),
    Shared(Arc<HugePageCopy>, Range<usize>),
}

impl Store {
    fn bytes(&self) -> &[u8] {
        match self {
            Store::Own(v) => v,
            Store::Shared(region, r) => &region.bytes()[r.clone()],
        }
    }
}

impl PartialEq for InputMajorQ5_0 {
    fn eq(&self, other: &Self) -> bool {
        (self.n_rows, self.n_cols) == (other.n_rows, other.n_cols)
            && self.store.bytes() == other.store.bytes()
    }
}

impl std::fmt::Debug for InputMajorQ5_0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputMajorQ5_0")
            .field("n_rows", &self.n_rows)
            .field("n_cols", &self.n_cols)
            .field("huge_pages", &matches!(self.store, Store::Shared(..)))
            .finish()
    }
}

/// Moves the bytes of `copies` into one region of anonymous memory advised for transparent
/// huge pages, each copy starting on a 64-byte boundary, as the model's weights are placed
/// (`crate::gguf::Placement::HugePages`): the kernels walk a copy's columns a few hundred
/// bytes at a time, and in 4 KiB pages the copies of a whole model cost a TLB miss every few
/// columns. Nothing moves where transparent huge pages are off, where the region would take
/// more than half of the available memory, or where it cannot be made; the copies then keep
/// their own buffers (same values either way).
pub fn place_in_huge_pages<'a>(copies: impl IntoIterator<Item = &'a mut InputMajorQ5_0>) {
    let mut copies: Vec<&mut InputMajorQ5_0> = copies.into_iter().collect();
    let mut ranges = Vec::with_capacity(copies.len());
    let mut len = 0usize;
    for c in &copies {
        let start = len.next_multiple_of(64);
        len = start + c.store.bytes().len();
        ranges.push(start..len);
    }
    if len == 0 || reason_not_to_copy(len).is_some() {
        return;
    }
    let mut joined = vec![0u8; len];
    for (c, r) in copies.iter().zip(&ranges) {
        joined[r.clone()].copy_from_slice(c.store.bytes());
    }
    let Ok(region) = HugePageCopy::new(&joined) else {
        return;
    };
    let region = Arc::new(region);
    for (c, r) in copies.iter_mut().zip(ranges) {
        c.store = Store::Shared(region.clone(), r);
    }
}

/// The kept columns of one input block: the Q8_0 scale, the columns (byte offsets) and their
/// i8 inputs in the first `n_kept` entries, padded to `n_padded` (a multiple of [`GROUP`];
/// pads repeat the last kept column with input 0), and `Σ xq` over the block.
#[derive(Clone, Debug)]
struct ActiveBlock {
    block: usize,
    dx: f32,
    cols: [usize; BLOCK],
    xq: [i8; BLOCK],
    n_kept: usize,
    n_padded: usize,
    xsum: i32,
}

impl Default for ActiveBlock {
    fn default() -> Self {
        ActiveBlock {
            block: 0,
            dx: 0.0,
            cols: [0; BLOCK],
            xq: [0; BLOCK],
            n_kept: 0,
            n_padded: 0,
            xsum: 0,
        }
    }
}

impl ActiveBlock {
    /// The kept columns' byte offsets.
    fn kept(&self) -> &[usize] {
        &self.cols[..self.n_kept]
    }

    /// The kept columns and their inputs, padded to whole groups.
    fn padded(&self) -> (&[usize], &[i8]) {
        (&self.cols[..self.n_padded], &self.xq[..self.n_padded])
    }
}

/// Reusable buffers for [`InputMajorQ5_0::matvec`].
#[derive(Debug, Default)]
pub struct InputMajorScratch {
    blocks: Vec<ActiveBlock>,
    n_blocks: usize,
}

impl InputMajorQ5_0 {
    /// Whether a copy of an `n_rows × n_cols` matrix of `ty` can be built.
    pub fn supports(ty: GgmlType, n_rows: usize, n_cols: usize) -> bool {
        ty == GgmlType::Q5_0 && n_rows % TILE == 0 && n_cols % BLOCK == 0 && n_rows > 0
    }

    /// Build the copy from a Q5_0 matrix of `n_rows` rows of `n_cols`. `Unsupported` when the
    /// type is not Q5_0 or `n_rows` is not a multiple of 64.
    pub fn from_q5_0(ty: GgmlType, n_rows: usize, n_cols: usize, data: &[u8]) -> Result<Self> {
        if ty != GgmlType::Q5_0 {
            bail!(Unsupported, "input-major copy of a {ty} matrix");
        }
        if !Self::supports(ty, n_rows, n_cols) {
            bail!(
                Unsupported,
                "input-major copy of a {n_rows}×{n_cols} matrix (needs rows a multiple of 64 \
                 and columns of 32)"
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
        let n_quants = n_cols * col;
        let mut bytes = vec![0u8; n_quants + 2 * per_row * n_rows];
        let (quants, scales) = bytes.split_at_mut(n_quants);
        for i in 0..n_rows {
            let (k, shift, mask) = tile_position(i % TILE);
            let base = i / TILE * TILE_BYTES;
            let (byte, hbyte, hbit) = (base + k, base + mask + k / 8, 1u8 << (k % 8));
            for (b, blk) in blocks[i * per_row..(i + 1) * per_row].iter().enumerate() {
                scales[2 * (b * n_rows + i)..][..2].copy_from_slice(&blk.d);
                let qh = blk.qh();
                for l in 0..BLOCK {
                    let lo = if l < 16 {
                        blk.qs[l] & 0x0f
                    } else {
                        blk.qs[l - 16] >> 4
                    };
                    let c = &mut quants[(b * BLOCK + l) * col..(b * BLOCK + l + 1) * col];
                    c[byte] |= lo << shift;
                    if (qh >> l) & 1 == 1 {
                        c[hbyte] |= hbit;
                    }
                }
            }
        }
        Ok(InputMajorQ5_0 {
            n_rows,
            n_cols,
            store: Store::Own(bytes),
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
        self.store.bytes().len()
    }

    /// The columns' quants.
    fn quants(&self) -> &[u8] {
        &self.store.bytes()[..self.n_cols * self.col_bytes()]
    }

    /// The scales: per input block, `n_rows` f16 bits (little-endian byte pairs).
    fn scale_bytes(&self) -> &[u8] {
        &self.store.bytes()[self.n_cols * self.col_bytes()..]
    }

    /// The f16 bits of neuron `i`'s scale in input block `b`.
    fn scale_bits(&self, b: usize, i: usize) -> u16 {
        let p = 2 * (b * self.n_rows + i);
        u16::from_le_bytes([self.scale_bytes()[p], self.scale_bytes()[p + 1]])
    }

    /// The 5-bit quant `q[i][j]` (for tests: the copy read back through its layout).
    pub fn quant(&self, i: usize, j: usize) -> u8 {
        let tile = &self.quants()[j * self.col_bytes() + i / TILE * TILE_BYTES..][..TILE_BYTES];
        tile_quant(tile, i % TILE)
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
        self.matvec_with_kernel(InputMajorKernel::best(), xq, out, scratch, exec)
    }

    /// [`Self::matvec`] with a chosen kernel (for tests and benchmarks); `Unsupported` when
    /// this CPU does not run it.
    pub fn matvec_with_kernel(
        &self,
        which: InputMajorKernel,
        xq: &[u8],
        out: &mut [f32],
        scratch: &mut InputMajorScratch,
        exec: &dyn Splitter,
    ) -> Result<()> {
        if !which.is_supported() {
            bail!(Unsupported, "input-major {which:?} kernel on this CPU");
        }
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
        let col = self.col_bytes();
        for (b, blk) in blocks.iter().enumerate() {
            if blk.qs.iter().all(|&v| v == 0) {
                continue;
            }
            let a = &mut s.blocks[s.n_blocks];
            s.n_blocks += 1;
            a.block = b;
            a.dx = blk.d();
            a.xsum = blk.qs.iter().map(|&v| i32::from(v)).sum();
            // Branch-free compaction: every entry is written, only the kept ones advance.
            let mut n = 0;
            for (l, &v) in blk.qs.iter().enumerate() {
                a.cols[n] = (b * BLOCK + l) * col;
                a.xq[n] = v;
                n += usize::from(v != 0);
            }
            a.n_kept = n;
            a.n_padded = n.next_multiple_of(GROUP);
            let last = a.cols[n - 1];
            for k in n..a.n_padded {
                a.cols[k] = last;
                a.xq[k] = 0;
            }
        }
        let active = &s.blocks[..s.n_blocks];
        let kernel = which.function();
        let n_tiles = self.n_rows / TILE;
        let n_tasks = exec.n_workers().min(n_tiles.div_ceil(4)).max(1);
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

/// Neuron `r`'s 5-bit quant in one column's tile.
fn tile_quant(tile: &[u8], r: usize) -> u8 {
    let (byte, shift, mask) = tile_position(r);
    let lo = (tile[byte] >> shift) & 0x0f;
    let hi = (tile[mask + byte / 8] >> (byte % 8)) & 1;
    lo | (hi << 4)
}

/// Computes `out` (the neurons of `tiles`, `out[0]` being neuron `64·tiles.start`) over the
/// active blocks.
type Kernel = fn(&InputMajorQ5_0, &[ActiveBlock], std::ops::Range<usize>, &mut [f32]);

/// The kernels of [`InputMajorQ5_0::matvec`]; all give the same value up to float summation
/// order (the integer sums per neuron and block are exact in each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMajorKernel {
    /// Portable reference.
    Scalar,
    /// AVX2 + FMA + F16C: `maddubs` + `madd` per four columns.
    Avx2,
    /// AVX-512 VNNI (on 256-bit vectors, as `quant::dot_vnni`): `vpdpbusd` per four columns.
    Vnni,
}

impl InputMajorKernel {
    pub const ALL: [InputMajorKernel; 3] = [
        InputMajorKernel::Scalar,
        InputMajorKernel::Avx2,
        InputMajorKernel::Vnni,
    ];

    /// The kernel the decode path runs: the one the row kernels' choice of instruction set
    /// implies (`GHOST_FORCE_SCALAR=1`: scalar; `GHOST_NO_VNNI=1`: AVX2).
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
            return if crate::quant::vnni_active() {
                InputMajorKernel::Vnni
            } else {
                InputMajorKernel::Avx2
            };
        }
        InputMajorKernel::Scalar
    }

    /// Whether this CPU runs the kernel.
    pub fn is_supported(self) -> bool {
        let avx2 = crate::quant::best_supported_isa() == crate::quant::Isa::Avx2;
        match self {
            InputMajorKernel::Scalar => true,
            InputMajorKernel::Avx2 => avx2,
            #[cfg(target_arch = "x86_64")]
            InputMajorKernel::Vnni => avx2 && crate::quant::dot_vnni::cpu_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            InputMajorKernel::Vnni => false,
        }
    }

    /// Callers check [`Self::is_supported`] first.
    fn function(self) -> Kernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            InputMajorKernel::Avx2 => x86::tiles_avx2,
            #[cfg(target_arch = "x86_64")]
            InputMajorKernel::Vnni => x86::tiles_vnni,
            _ => tiles_scalar,
        }
    }
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
        for t in tiles.clone() {
            for r in 0..TILE {
                let mut acc = 0i32;
                for (&c, &x) in a.kept().iter().zip(&a.xq) {
                    let tile = &m.quants()[c + t * TILE_BYTES..c + (t + 1) * TILE_BYTES];
                    acc += i32::from(tile_quant(tile, r)) * i32::from(x);
                }
                let i = t * TILE + r;
                let d = half::f16::from_bits(m.scale_bits(a.block, i)).to_f32();
                out[i - i0] += d * a.dx * (acc - 16 * a.xsum) as f32;
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

    /// Random weights, plus extreme rows: all at the largest magnitude of either sign, and
    /// all zero (d = 0).
    fn test_weights(n_rows: usize, n_cols: usize, st: &mut u64) -> Vec<f32> {
        let mut w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(st) * 0.3).collect();
        for c in 0..n_cols {
            w[5 * n_cols + c] = if c % 2 == 0 { 1.0 } else { -1.0 };
            w[6 * n_cols + c] = -1.0;
            w[7 * n_cols + c] = 0.0;
            w[70 * n_cols + c] = 1.0;
        }
        w
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

    /// The copy read back through its layout gives every quant of the original: `q = w/d +
    /// 16` from the reference dequantizer (exact: `w = d·(q − 16)` is exact in f32).
    #[test]
    fn copy_holds_the_original_quants() {
        let (n_rows, n_cols) = (192, 96);
        let mut st = 5u64;
        let (data, deq) = q5_0(&test_weights(n_rows, n_cols, &mut st), n_rows, n_cols);
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &data).unwrap();
        assert_eq!(copy.total_bytes(), data.len());
        let blocks = cast_blocks::<BlockQ5_0>(&data).unwrap();
        for i in 0..n_rows {
            for j in 0..n_cols {
                let blk = &blocks[i * n_cols / BLOCK + j / BLOCK];
                let d = half::f16::from_le_bytes(blk.d).to_f32();
                assert_eq!(copy.scale_bits(j / BLOCK, i), u16::from_le_bytes(blk.d));
                if d == 0.0 {
                    continue;
                }
                let q = deq[i * n_cols + j] / d + 16.0;
                assert_eq!(f32::from(copy.quant(i, j)), q, "neuron {i} input {j}");
            }
        }
    }

    /// Inputs for the matvec tests: random, every other entry zero plus a whole zero block,
    /// one entry, ±127 everywhere after quantization, all zero.
    fn test_input(case: usize, n_cols: usize, st: &mut u64) -> Vec<u8> {
        let mut x: Vec<f32> = (0..n_cols).map(|_| lcg(st) * 2.0).collect();
        match case {
            1 => {
                x.iter_mut().step_by(2).for_each(|v| *v = 0.0);
                x[32..64].fill(0.0);
            }
            2 => {
                x.fill(0.0);
                x[77] = -3.0;
            }
            3 => x
                .iter_mut()
                .enumerate()
                .for_each(|(j, v)| *v = if j % 3 == 0 { -1.0 } else { 1.0 }),
            4 => x.fill(0.0),
            _ => {}
        }
        let mut xq = vec![0u8; GgmlType::Q8_0.row_bytes(n_cols as u64).unwrap() as usize];
        quantize_activations(GgmlType::Q8_0, &x, &mut xq).unwrap();
        xq
    }

    /// Per row: the exact value (f64, dequantized weights times dequantized input) and the
    /// bound on what f32 summation order may change. Each path computes per block an exact
    /// integer sum times two f16/f32 scales (at most 3 roundings of the block term), then adds
    /// the `nb` block terms in some order (at most `nb − 1` roundings, each bounded by the
    /// sum of the terms' magnitudes): `|got − exact| ≤ (nb + 3)·2⁻²⁴·Σ_b |term_b|`.
    fn exact_and_bound(deq: &[f32], xq: &[u8], n_rows: usize, n_cols: usize) -> Vec<(f64, f64)> {
        let mut xd = vec![0f32; n_cols];
        dequantize_row(GgmlType::Q8_0, xq, &mut xd).unwrap();
        let nb = n_cols / BLOCK;
        (0..n_rows)
            .map(|i| {
                let terms: Vec<f64> = (0..nb)
                    .map(|b| {
                        (b * BLOCK..(b + 1) * BLOCK)
                            .map(|j| deq[i * n_cols + j] as f64 * xd[j] as f64)
                            .sum()
                    })
                    .collect();
                let mag: f64 = terms.iter().map(|t| t.abs()).sum();
                let eps = f64::from(f32::EPSILON) / 2.0;
                (terms.iter().sum(), (nb + 3) as f64 * eps * mag)
            })
            .collect()
    }

    /// Every kernel this CPU runs, serial and split over workers, against the dequantized
    /// original times the dequantized Q8_0 input (f64): the same value within the bound of
    /// float summation order, whatever entries are zero.
    #[test]
    fn every_kernel_matches_the_dequantized_original() {
        // 5 tiles: the split runs tasks of 3 and 2 tiles; 4 blocks.
        let (n_rows, n_cols) = (320, 128);
        let mut st = 3u64;
        let (data, deq) = q5_0(&test_weights(n_rows, n_cols, &mut st), n_rows, n_cols);
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &data).unwrap();
        let mut sc = InputMajorScratch::default();
        let kernels: Vec<_> = InputMajorKernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect();
        eprintln!("kernels tested: {kernels:?}");
        for case in 0..5 {
            let xq = test_input(case, n_cols, &mut st);
            let want = exact_and_bound(&deq, &xq, n_rows, n_cols);
            for &k in &kernels {
                for exec in [&Serial as &dyn Splitter, &Splits(2)] {
                    let mut got = vec![f32::NAN; n_rows];
                    copy.matvec_with_kernel(k, &xq, &mut got, &mut sc, exec)
                        .unwrap();
                    for (i, (&g, &(w, bound))) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g as f64 - w).abs() <= bound,
                            "case {case} {k:?} {} workers, row {i}: {g} vs {w} (bound {bound})",
                            exec.n_workers()
                        );
                    }
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

    /// Every kernel against the dense Q5_0 matvec of the decode path (`quant::matvec`) on an
    /// input with no zero entry: both sum the same exact block integers times the same scales,
    /// so they differ by float summation order only, at most the two paths' bounds
    /// (`exact_and_bound`) added. Also the scalar reference against the SIMD kernels on a
    /// sparse input, within the same bound.
    #[test]
    fn every_kernel_matches_the_dense_q5_0_matvec() {
        let (n_rows, n_cols) = (256, 576);
        let mut st = 9u64;
        let (data, deq) = q5_0(&test_weights(n_rows, n_cols, &mut st), n_rows, n_cols);
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &data).unwrap();
        let mut sc = InputMajorScratch::default();
        let x: Vec<f32> = (0..n_cols)
            .map(|_| {
                let v = lcg(&mut st);
                v.signum() * (0.5 + v.abs())
            })
            .collect();
        let mut xq = vec![0u8; GgmlType::Q8_0.row_bytes(n_cols as u64).unwrap() as usize];
        quantize_activations(GgmlType::Q8_0, &x, &mut xq).unwrap();
        let xq_blocks = cast_blocks::<BlockQ8_0>(&xq).unwrap();
        assert!(xq_blocks.iter().all(|b| b.qs.iter().all(|&v| v != 0)));
        let mut dense = vec![0f32; n_rows];
        crate::quant::matvec(GgmlType::Q5_0, n_cols, &data, 0..n_rows, &xq, &mut dense).unwrap();
        let bounds = exact_and_bound(&deq, &xq, n_rows, n_cols);
        for k in InputMajorKernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
        {
            let mut got = vec![0f32; n_rows];
            copy.matvec_with_kernel(k, &xq, &mut got, &mut sc, &Serial)
                .unwrap();
            for i in 0..n_rows {
                assert!(
                    (got[i] as f64 - dense[i] as f64).abs() <= 2.0 * bounds[i].1,
                    "{k:?} row {i}: {} vs dense {}",
                    got[i],
                    dense[i]
                );
            }
        }
        // Sparse input: the SIMD kernels against the scalar reference.
        let mut sparse = xq.clone();
        let blocks = crate::quant::blocks::cast_blocks_mut::<BlockQ8_0>(&mut sparse).unwrap();
        for (n, b) in blocks.iter_mut().enumerate() {
            for (l, v) in b.qs.iter_mut().enumerate() {
                if (n * 7 + l * 3) % 5 == 0 {
                    *v = 0;
                }
            }
        }
        let bounds = exact_and_bound(&deq, &sparse, n_rows, n_cols);
        let mut reference = vec![0f32; n_rows];
        copy.matvec_with_kernel(
            InputMajorKernel::Scalar,
            &sparse,
            &mut reference,
            &mut sc,
            &Serial,
        )
        .unwrap();
        for k in InputMajorKernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
        {
            let mut got = vec![0f32; n_rows];
            copy.matvec_with_kernel(k, &sparse, &mut got, &mut sc, &Serial)
                .unwrap();
            for i in 0..n_rows {
                assert!(
                    (got[i] as f64 - reference[i] as f64).abs() <= 2.0 * bounds[i].1,
                    "{k:?} row {i}: {} vs scalar {}",
                    got[i],
                    reference[i]
                );
            }
        }
    }

    /// Copies moved into a shared huge-page region hold the same bytes and give bit-identical
    /// results (where the region cannot be made they stay where they were: same check).
    #[test]
    fn copies_in_huge_pages_are_unchanged() {
        let mut st = 21u64;
        let mut owned = Vec::new();
        for (n_rows, n_cols) in [(128, 64), (192, 96)] {
            let (data, _) = q5_0(&test_weights(n_rows, n_cols, &mut st), n_rows, n_cols);
            owned.push(InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &data).unwrap());
        }
        let mut placed = owned.clone();
        place_in_huge_pages(placed.iter_mut());
        let mut sc = InputMajorScratch::default();
        for (a, b) in owned.iter().zip(&placed) {
            assert_eq!(a, b);
            let xq = test_input(0, a.n_cols(), &mut st);
            let (mut ya, mut yb) = (vec![0f32; a.n_rows()], vec![0f32; a.n_rows()]);
            a.matvec(&xq, &mut ya, &mut sc, &Serial).unwrap();
            b.matvec(&xq, &mut yb, &mut sc, &Serial).unwrap();
            assert_eq!(ya, yb);
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
        for rows in [32, 48, 96] {
            assert!(matches!(
                InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, rows, 64, &data),
                Err(crate::Error::Unsupported(_))
            ));
        }
        assert!(InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, 128, 64, &data).is_err());
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
        for k in InputMajorKernel::ALL {
            let r = copy.matvec_with_kernel(k, &xq, &mut out, &mut sc, &Serial);
            assert_eq!(r.is_ok(), k.is_supported(), "{k:?}");
        }
    }
}
