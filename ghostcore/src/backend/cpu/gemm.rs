//! Cache-blocked f32 GEMM for prompt batches: `out[j][r] = dequant(W[r]) · x[j]`.
//!
//! This is the exact-activation (f32) product of prefill. The structure is the classic
//! register-tiled one:
//! - the activation rows are packed once per product into column blocks of [`COL_BLOCK`]
//!   rows, stored k-major (`block[k][c]`), so one vector load gives 16 (AVX-512) or 8 (AVX2)
//!   activation rows at the same column `k` ([`PackedActs`]);
//! - the weight rows are dequantized in panels of [`PANEL_ROWS`] rows into a per-thread f32
//!   buffer, once per product (not once per activation row);
//! - a micro-kernel multiplies one panel by one column block with all `PANEL_ROWS × COL_BLOCK`
//!   sums in registers (AVX-512: 12 × 32 in 24 zmm accumulators; AVX2: 6 × 16 in 12 ymm),
//!   broadcasting one weight per row and `k` and loading the activation vectors, so the weight
//!   panel is read from L1 once per column block and the activations stream from L2;
//! - panels are handed out to the thread pool through its atomic chunk counter.
//!
//! Every output is a sum over `k` in blocks of `K_BLOCK` (128) columns: within a block one f32
//! fused-multiply-add chain in increasing `k` (the scalar kernel multiplies and adds
//! separately), and the block sums added in order. Results therefore differ from other f32
//! orderings only by rounding. `GHOST_FORCE_SCALAR=1` selects the scalar kernel.
//!
//! The AVX-512 micro-kernel is inline assembly (the crate's minimum Rust version predates the
//! AVX-512 intrinsics); it is chosen when the CPU reports AVX-512F, else the AVX2 one.

use std::cell::RefCell;

use crate::quant::{self, GgmlType, Isa};
use crate::threadpool::{DisjointSlice, ThreadPool};
use crate::Result;

/// Weight rows per panel (rows of one micro-kernel call).
pub const PANEL_ROWS: usize = 12;
/// Activation rows per packed column block (columns of one micro-kernel call).
pub const COL_BLOCK: usize = 32;
/// f32 lanes per 64-byte cache line; packed buffers start on a line boundary.
const LINE_F32: usize = 16;

/// The instruction set a GEMM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmIsa {
    Scalar,
    Avx2,
    Avx512,
}

impl GemmIsa {
    /// The best kernel this CPU runs, scalar under `GHOST_FORCE_SCALAR=1`.
    pub fn active() -> GemmIsa {
        if quant::active_isa() == Isa::Scalar {
            return GemmIsa::Scalar;
        }
        GemmIsa::best_supported()
    }

    /// The best kernel this CPU runs (ignoring `GHOST_FORCE_SCALAR`).
    pub fn best_supported() -> GemmIsa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && quant::best_supported_isa() == Isa::Avx2 {
                return GemmIsa::Avx512;
            }
            if quant::best_supported_isa() == Isa::Avx2 {
                return GemmIsa::Avx2;
            }
        }
        GemmIsa::Scalar
    }

    /// Whether this CPU can run kernels of `self`.
    pub fn is_supported(self) -> bool {
        match self {
            GemmIsa::Scalar => true,
            GemmIsa::Avx2 => quant::best_supported_isa() == Isa::Avx2,
            GemmIsa::Avx512 => GemmIsa::best_supported() == GemmIsa::Avx512,
        }
    }
}

/// Activation rows packed for [`gemm`]: `ceil(m / COL_BLOCK)` blocks, block `b` holding
/// `data[b][k][c] = x[b * COL_BLOCK + c][k]` (zero past the last row).
#[derive(Debug, Default)]
pub struct PackedActs {
    buf: Vec<f32>,
    /// Offset of the first (cache-line aligned) element in `buf`.
    start: usize,
    m: usize,
    k: usize,
}

impl PackedActs {
    /// Number of activation rows packed.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Length of each activation row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Marks the buffer as holding no rows (the next [`project`](super::linear::project)
    /// with `reuse` packs again).
    pub fn invalidate(&mut self) {
        self.m = 0;
        self.k = 0;
    }

    fn n_blocks(&self) -> usize {
        self.m.div_ceil(COL_BLOCK)
    }

    fn block(&self, b: usize) -> &[f32] {
        let len = self.k * COL_BLOCK;
        &self.buf[self.start + b * len..self.start + (b + 1) * len]
    }

    /// Packs `m` rows of `k` floats (`x.len() >= m * k`).
    pub fn pack(&mut self, x: &[f32], m: usize, k: usize) -> Result<()> {
        self.pack_with(None, x, m, k)
    }

    /// [`PackedActs::pack`] split over `pool`'s threads.
    pub fn pack_parallel(
        &mut self,
        pool: &ThreadPool,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Result<()> {
        self.pack_with(Some(pool), x, m, k)
    }

    fn pack_with(
        &mut self,
        pool: Option<&ThreadPool>,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Result<()> {
        let Some(len) = m
            .div_ceil(COL_BLOCK)
            .checked_mul(COL_BLOCK)
            .and_then(|v| v.checked_mul(k))
        else {
            crate::bail!(InvalidArgument, "{m} x {k} activations overflow");
        };
        if x.len() < m * k {
            crate::bail!(
                InvalidArgument,
                "packing {m} rows of {k}: only {} activations",
                x.len()
            );
        }
        if self.buf.len() < len + LINE_F32 {
            self.buf.resize(len + LINE_F32, 0.0);
        }
        self.start = self.buf[..LINE_F32]
            .as_ptr()
            .align_offset(64)
            .min(LINE_F32 - 1);
        self.m = m;
        self.k = k;
        if len == 0 {
            return Ok(());
        }
        // Work items: a block's columns in slices of PACK_COLS, each a contiguous run of the
        // packed buffer.
        const PACK_COLS: usize = 128;
        let n_slices = k.div_ceil(PACK_COLS);
        let data = DisjointSlice::new(&mut self.buf[self.start..self.start + len]);
        let item = |i: usize| {
            let (b, kc) = (i / n_slices, i % n_slices);
            let j0 = b * COL_BLOCK;
            let rows = (m - j0).min(COL_BLOCK);
            let (c0, c1) = (kc * PACK_COLS, ((kc + 1) * PACK_COLS).min(k));
            let base = b * k * COL_BLOCK;
            // SAFETY: item i alone writes packed columns c0..c1 of block b.
            let dst = unsafe { data.range_mut(base + c0 * COL_BLOCK..base + c1 * COL_BLOCK) };
            if rows < COL_BLOCK {
                dst.fill(0.0);
            }
            let src = &x[j0 * k..(j0 + rows) * k];
            // SAFETY: `src` holds `rows` rows of k floats, columns c0..c1 read; `dst` holds
            // c1 - c0 rows of COL_BLOCK floats, the first `rows` of each written.
            unsafe {
                transpose(
                    src[c0..].as_ptr(),
                    k,
                    rows,
                    c1 - c0,
                    dst.as_mut_ptr(),
                    COL_BLOCK,
                )
            };
        };
        let n_items = m.div_ceil(COL_BLOCK) * n_slices;
        match pool {
            Some(pool) => pool.for_each_chunk(n_items, 1, |_, items| items.for_each(item)),
            None => (0..n_items).for_each(item),
        }
        Ok(())
    }
}

thread_local! {
    /// Per-thread panel of dequantized weight rows.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[j * ldo + r] = dequant(weight row r) · x[j]` for every row `r < n_rows` of the
/// `ty` matrix `w` (`n_rows` rows of `acts.k()` columns) and every packed row `j < acts.m()`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    pool: &ThreadPool,
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    acts: &PackedActs,
    out: &mut [f32],
    ldo: usize,
) -> Result<()> {
    gemm_with_isa(pool, GemmIsa::active(), ty, w, n_rows, acts, out, ldo)
}

/// [`gemm`] with the kernels of `isa` (scalar where this CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with_isa(
    pool: &ThreadPool,
    isa: GemmIsa,
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    acts: &PackedActs,
    out: &mut [f32],
    ldo: usize,
) -> Result<()> {
    let isa = if isa.is_supported() {
        isa
    } else {
        GemmIsa::Scalar
    };
    let (m, k) = (acts.m, acts.k);
    if !ty.is_supported_for_compute() {
        crate::bail!(Unsupported, "GEMM over {ty} weights");
    }
    let Some(row_bytes) = ty.row_bytes(k as u64).map(|v| v as usize) else {
        crate::bail!(
            InvalidArgument,
            "{k} columns is not a whole number of {ty} blocks"
        );
    };
    if Some(w.len()) != n_rows.checked_mul(row_bytes) {
        crate::bail!(
            InvalidArgument,
            "GEMM {ty}: {} weight bytes for {n_rows} rows of {row_bytes}",
            w.len()
        );
    }
    let need_out = match m {
        0 => 0,
        _ => (m - 1)
            .checked_mul(ldo)
            .and_then(|v| v.checked_add(n_rows))
            .unwrap_or(usize::MAX),
    };
    if ldo < n_rows || out.len() < need_out {
        crate::bail!(
            InvalidArgument,
            "GEMM output: stride {ldo} for {n_rows} rows, length {} (need {need_out})",
            out.len()
        );
    }
    if m == 0 || n_rows == 0 || k == 0 {
        for j in 0..m {
            out[j * ldo..j * ldo + n_rows].fill(0.0);
        }
        return Ok(());
    }
    let dst = OutPtr {
        ptr: out.as_mut_ptr(),
        len: need_out,
    };
    let n_panels = n_rows.div_ceil(PANEL_ROWS);
    let errors = super::linear::ErrorSlot::default();
    pool.for_each_chunk(n_panels, 1, |_, panels| {
        PANEL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < PANEL_ROWS * k {
                p.resize(PANEL_ROWS * k, 0.0);
            }
            for panel in panels {
                let r0 = panel * PANEL_ROWS;
                let nr = (n_rows - r0).min(PANEL_ROWS);
                for r in 0..nr {
                    let src = &w[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes];
                    if let Err(e) = quant::dequantize_row_fast(ty, src, &mut p[r * k..(r + 1) * k])
                    {
                        errors.record(Err(e));
                        return;
                    }
                }
                p[nr * k..PANEL_ROWS * k].fill(0.0);
                // SAFETY: rows r0..r0+nr of every output row j belong to this panel only.
                unsafe { panel_times_acts(isa, &p[..PANEL_ROWS * k], acts, &dst, ldo, r0, nr) };
            }
        })
    });
    errors.into_result()
}

/// Multiplies one dequantized panel (`PANEL_ROWS` rows of `acts.k` floats, zero past `nr`)
/// by every column block and writes rows `r0..r0 + nr` of the output.
///
/// # Safety
/// No other thread may write output elements `j * ldo + r0 .. j * ldo + r0 + nr` meanwhile.
unsafe fn panel_times_acts(
    isa: GemmIsa,
    panel: &[f32],
    acts: &PackedActs,
    dst: &OutPtr,
    ldo: usize,
    r0: usize,
    nr: usize,
) {
    let k = acts.k;
    let mut tile = [0.0f32; PANEL_ROWS * COL_BLOCK];
    for b in 0..acts.n_blocks() {
        let j0 = b * COL_BLOCK;
        let cols = (acts.m - j0).min(COL_BLOCK);
        let xb = acts.block(b);
        micro_kernel(isa, panel, xb, k, cols, &mut tile);
        // Output rows j0..j0+cols, columns r0..r0+nr: the last element written is below
        // `dst.len` (checked), and only this panel writes these columns (caller's contract).
        assert!((j0 + cols - 1) * ldo + r0 + nr <= dst.len && nr <= PANEL_ROWS);
        // SAFETY: the tile holds nr rows of COL_BLOCK floats; the destination elements are
        // in bounds (asserted) and this panel's own.
        unsafe {
            transpose(
                tile.as_ptr(),
                COL_BLOCK,
                nr,
                cols,
                dst.ptr.add(j0 * ldo + r0),
                ldo,
            )
        };
    }
}

/// The GEMM output shared by the pool's threads, each writing its own panels' columns.
struct OutPtr {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: threads write disjoint elements (each output column range belongs to one panel and
// panels are handed out once), and the buffer outlives the parallel section.
unsafe impl Sync for OutPtr {}

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `r < rows`, `c < cols` (AVX2 8 × 8
/// register transposes where possible; a pure data move, identical on every path).
///
/// # Safety
/// `src` must be readable and `dst` writable at every index named above, and the two must not
/// overlap.
unsafe fn transpose(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    let mut r0 = 0;
    #[cfg(target_arch = "x86_64")]
    if GemmIsa::active() != GemmIsa::Scalar {
        while r0 + 4 <= rows {
            let group = if r0 + 8 <= rows { 8 } else { 4 };
            let mut c0 = 0;
            while c0 + 8 <= cols {
                // SAFETY: AVX2 is present (active ISA); rows r0..r0+group and columns
                // c0..c0+8 are within the caller's bounds.
                unsafe {
                    avx2::transpose_8x8(
                        src.add(r0 * src_stride + c0),
                        src_stride,
                        group,
                        dst.add(c0 * dst_stride + r0),
                        dst_stride,
                    )
                };
                c0 += 8;
            }
            for r in r0..r0 + group {
                for c in c0..cols {
                    // SAFETY: r < rows, c < cols (caller's bounds).
                    unsafe { *dst.add(c * dst_stride + r) = *src.add(r * src_stride + c) };
                }
            }
            r0 += group;
        }
    }
    for r in r0..rows {
        for c in 0..cols {
            // SAFETY: r < rows, c < cols (caller's bounds).
            unsafe { *dst.add(c * dst_stride + r) = *src.add(r * src_stride + c) };
        }
    }
}

/// Columns of `k` summed per kernel call: each output is the sum, in order, of per-block
/// partial sums (each a multiply-add chain from zero), which bounds the rounding error by
/// about `(K_BLOCK + k / K_BLOCK)` ulps instead of `k`.
const K_BLOCK: usize = 128;

/// `tile[r][c] = Σ_k panel[r][k] · xb[k][c]` for all `PANEL_ROWS` rows and the first `cols`
/// columns (at least those; AVX kernels may fill more).
fn micro_kernel(
    isa: GemmIsa,
    panel: &[f32],
    xb: &[f32],
    k: usize,
    cols: usize,
    tile: &mut [f32; PANEL_ROWS * COL_BLOCK],
) {
    assert!(
        k >= 1 && panel.len() >= PANEL_ROWS * k && xb.len() >= k * COL_BLOCK && cols <= COL_BLOCK
    );
    for k0 in (0..k).step_by(K_BLOCK) {
        let kn = (k - k0).min(K_BLOCK);
        let acc = k0 > 0;
        match isa {
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx512 => {
                // SAFETY: AVX-512F is present (checked by `gemm_with_isa`); kn >= 1; rows of
                // the panel (stride k) are read at columns k0..k0+kn and the packed block at
                // rows k0..k0+kn, within the asserted lengths; the tile holds
                // PANEL_ROWS × COL_BLOCK floats.
                unsafe {
                    avx512::kernel(
                        panel.as_ptr().add(k0),
                        k,
                        kn,
                        xb.as_ptr().add(k0 * COL_BLOCK),
                        tile.as_mut_ptr(),
                        acc,
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx2 => {
                for c0 in (0..cols).step_by(16) {
                    for r0 in (0..PANEL_ROWS).step_by(avx2::ROWS) {
                        // SAFETY: AVX2+FMA are present (checked by `gemm_with_isa`); rows
                        // r0..r0+ROWS at columns k0..k0+kn and packed rows k0..k0+kn,
                        // columns c0..c0+16 lie within the asserted lengths.
                        unsafe {
                            avx2::kernel(
                                panel.as_ptr().add(r0 * k + k0),
                                k,
                                kn,
                                xb.as_ptr().add(k0 * COL_BLOCK + c0),
                                tile.as_mut_ptr().add(r0 * COL_BLOCK + c0),
                                acc,
                            )
                        }
                    }
                }
            }
            _ => scalar_kernel(panel, k, k0, kn, xb, cols, tile, acc),
        }
    }
}

/// Portable kernel: multiply then add, in increasing `k` per output, over columns
/// `k0..k0 + kn`; the block's sums replace the tile or (`accumulate`) are added to it.
#[allow(clippy::too_many_arguments)]
fn scalar_kernel(
    panel: &[f32],
    k: usize,
    k0: usize,
    kn: usize,
    xb: &[f32],
    cols: usize,
    tile: &mut [f32; PANEL_ROWS * COL_BLOCK],
    accumulate: bool,
) {
    let mut part = [0.0f32; PANEL_ROWS * COL_BLOCK];
    for kk in k0..k0 + kn {
        let xk = &xb[kk * COL_BLOCK..kk * COL_BLOCK + cols];
        for r in 0..PANEL_ROWS {
            let wv = panel[r * k + kk];
            let t = &mut part[r * COL_BLOCK..r * COL_BLOCK + cols];
            for (t, &xv) in t.iter_mut().zip(xk) {
                *t += wv * xv;
            }
        }
    }
    for (t, p) in tile.iter_mut().zip(part) {
        *t = if accumulate { *t + p } else { p };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{COL_BLOCK, PANEL_ROWS};

    const _: () = assert!(PANEL_ROWS == 12 && COL_BLOCK == 32);

    /// The full `12 × 32` tile: `tile[r][c] = Σ_kk w[r·k + kk] · xb[kk·32 + c]`, with 24 zmm
    /// accumulators (one fused multiply-add chain per output, `kk` increasing).
    ///
    /// Written as inline assembly because the AVX-512 intrinsics and `target_feature`s are
    /// newer than this crate's minimum Rust version. The function enables AVX2 so that the
    /// compiler keeps no vector state across the block beyond what the clobbers name; zmm16+
    /// are declared clobbered where AVX-512 is enabled for the whole build (elsewhere the
    /// compiler never allocates them).
    ///
    /// With `accumulate`, the tile's previous contents are added to the sums before storing.
    ///
    /// # Safety
    /// The CPU must support AVX-512F (checked by the caller with `is_x86_feature_detected!`);
    /// `k >= 1`; `w` must hold 12 rows of stride `ldw` with `k` readable floats each, `xb`
    /// `32 · k` floats, `tile` `12 · 32`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(
        w: *const f32,
        ldw: usize,
        k: usize,
        xb: *const f32,
        tile: *mut f32,
        accumulate: bool,
    ) {
        let s = ldw * 4;
        // SAFETY: the caller's contract bounds every load (rows r < 12 at byte offsets
        // r·s + 4·kk, kk < k, and 128·kk + 0..128 in `xb`) and the 1536-byte tile access.
        unsafe {
            // zmm16-31 are used below. Where AVX-512 is enabled for the whole build
            // (`-C target-cpu=...`) the compiler may allocate them too, so they are declared
            // clobbered; otherwise Rust cannot name them and the compiler never uses them.
            macro_rules! tile_asm {
                ($($clobbers:tt)*) => {
                    std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            "vpxord zmm16, zmm16, zmm16",
            "vpxord zmm17, zmm17, zmm17",
            "vpxord zmm18, zmm18, zmm18",
            "vpxord zmm19, zmm19, zmm19",
            "vpxord zmm20, zmm20, zmm20",
            "vpxord zmm21, zmm21, zmm21",
            "vpxord zmm22, zmm22, zmm22",
            "vpxord zmm23, zmm23, zmm23",
            "2:",
            "vmovups zmm24, zmmword ptr [{x}]",
            "vmovups zmm25, zmmword ptr [{x} + 64]",
            "vbroadcastss zmm26, dword ptr [{w0}]",
            "vfmadd231ps zmm0, zmm24, zmm26",
            "vfmadd231ps zmm1, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w0} + {s}]",
            "vfmadd231ps zmm2, zmm24, zmm27",
            "vfmadd231ps zmm3, zmm25, zmm27",
            "vbroadcastss zmm26, dword ptr [{w0} + {s}*2]",
            "vfmadd231ps zmm4, zmm24, zmm26",
            "vfmadd231ps zmm5, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w0} + {s3}]",
            "vfmadd231ps zmm6, zmm24, zmm27",
            "vfmadd231ps zmm7, zmm25, zmm27",
            "vbroadcastss zmm26, dword ptr [{w4}]",
            "vfmadd231ps zmm8, zmm24, zmm26",
            "vfmadd231ps zmm9, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w4} + {s}]",
            "vfmadd231ps zmm10, zmm24, zmm27",
            "vfmadd231ps zmm11, zmm25, zmm27",
            "vbroadcastss zmm26, dword ptr [{w4} + {s}*2]",
            "vfmadd231ps zmm12, zmm24, zmm26",
            "vfmadd231ps zmm13, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w4} + {s3}]",
            "vfmadd231ps zmm14, zmm24, zmm27",
            "vfmadd231ps zmm15, zmm25, zmm27",
            "vbroadcastss zmm26, dword ptr [{w8}]",
            "vfmadd231ps zmm16, zmm24, zmm26",
            "vfmadd231ps zmm17, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w8} + {s}]",
            "vfmadd231ps zmm18, zmm24, zmm27",
            "vfmadd231ps zmm19, zmm25, zmm27",
            "vbroadcastss zmm26, dword ptr [{w8} + {s}*2]",
            "vfmadd231ps zmm20, zmm24, zmm26",
            "vfmadd231ps zmm21, zmm25, zmm26",
            "vbroadcastss zmm27, dword ptr [{w8} + {s3}]",
            "vfmadd231ps zmm22, zmm24, zmm27",
            "vfmadd231ps zmm23, zmm25, zmm27",
            "add {w0}, 4",
            "add {w4}, 4",
            "add {w8}, 4",
            "add {x}, 128",
            "dec {n}",
            "jnz 2b",
            "test {acc}, {acc}",
            "jz 3f",
            "vaddps zmm0, zmm0, zmmword ptr [{tile} + 0]",
            "vaddps zmm1, zmm1, zmmword ptr [{tile} + 64]",
            "vaddps zmm2, zmm2, zmmword ptr [{tile} + 128]",
            "vaddps zmm3, zmm3, zmmword ptr [{tile} + 192]",
            "vaddps zmm4, zmm4, zmmword ptr [{tile} + 256]",
            "vaddps zmm5, zmm5, zmmword ptr [{tile} + 320]",
            "vaddps zmm6, zmm6, zmmword ptr [{tile} + 384]",
            "vaddps zmm7, zmm7, zmmword ptr [{tile} + 448]",
            "vaddps zmm8, zmm8, zmmword ptr [{tile} + 512]",
            "vaddps zmm9, zmm9, zmmword ptr [{tile} + 576]",
            "vaddps zmm10, zmm10, zmmword ptr [{tile} + 640]",
            "vaddps zmm11, zmm11, zmmword ptr [{tile} + 704]",
            "vaddps zmm12, zmm12, zmmword ptr [{tile} + 768]",
            "vaddps zmm13, zmm13, zmmword ptr [{tile} + 832]",
            "vaddps zmm14, zmm14, zmmword ptr [{tile} + 896]",
            "vaddps zmm15, zmm15, zmmword ptr [{tile} + 960]",
            "vaddps zmm16, zmm16, zmmword ptr [{tile} + 1024]",
            "vaddps zmm17, zmm17, zmmword ptr [{tile} + 1088]",
            "vaddps zmm18, zmm18, zmmword ptr [{tile} + 1152]",
            "vaddps zmm19, zmm19, zmmword ptr [{tile} + 1216]",
            "vaddps zmm20, zmm20, zmmword ptr [{tile} + 1280]",
            "vaddps zmm21, zmm21, zmmword ptr [{tile} + 1344]",
            "vaddps zmm22, zmm22, zmmword ptr [{tile} + 1408]",
            "vaddps zmm23, zmm23, zmmword ptr [{tile} + 1472]",
            "3:",
            "vmovups zmmword ptr [{tile} + 0], zmm0",
            "vmovups zmmword ptr [{tile} + 64], zmm1",
            "vmovups zmmword ptr [{tile} + 128], zmm2",
            "vmovups zmmword ptr [{tile} + 192], zmm3",
            "vmovups zmmword ptr [{tile} + 256], zmm4",
            "vmovups zmmword ptr [{tile} + 320], zmm5",
            "vmovups zmmword ptr [{tile} + 384], zmm6",
            "vmovups zmmword ptr [{tile} + 448], zmm7",
            "vmovups zmmword ptr [{tile} + 512], zmm8",
            "vmovups zmmword ptr [{tile} + 576], zmm9",
            "vmovups zmmword ptr [{tile} + 640], zmm10",
            "vmovups zmmword ptr [{tile} + 704], zmm11",
            "vmovups zmmword ptr [{tile} + 768], zmm12",
            "vmovups zmmword ptr [{tile} + 832], zmm13",
            "vmovups zmmword ptr [{tile} + 896], zmm14",
            "vmovups zmmword ptr [{tile} + 960], zmm15",
            "vmovups zmmword ptr [{tile} + 1024], zmm16",
            "vmovups zmmword ptr [{tile} + 1088], zmm17",
            "vmovups zmmword ptr [{tile} + 1152], zmm18",
            "vmovups zmmword ptr [{tile} + 1216], zmm19",
            "vmovups zmmword ptr [{tile} + 1280], zmm20",
            "vmovups zmmword ptr [{tile} + 1344], zmm21",
            "vmovups zmmword ptr [{tile} + 1408], zmm22",
            "vmovups zmmword ptr [{tile} + 1472], zmm23",
            "vzeroupper",
            w0 = inout(reg) w => _,
            w4 = inout(reg) w.add(4 * ldw) => _,
            w8 = inout(reg) w.add(8 * ldw) => _,
            x = inout(reg) xb => _,
            n = inout(reg) k => _,
            s = in(reg) s,
            s3 = in(reg) 3 * s,
            tile = in(reg) tile,
            acc = in(reg) accumulate as usize,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            $($clobbers)*
            options(nostack),
                    )
                };
            }
            #[cfg(target_feature = "avx512f")]
            tile_asm!(
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
            );
            #[cfg(not(target_feature = "avx512f"))]
            tile_asm!();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::COL_BLOCK;
    use std::arch::x86_64::*;

    /// Transposes `rows` (8, or 4) rows of 8 floats at `src` into 8 rows of `rows` floats at
    /// `dst`.
    ///
    /// # Safety
    /// AVX2 must be available; `src` readable for 8 floats at every `r · src_stride`,
    /// `r < rows`; `dst` writable for `rows` floats at every `c · dst_stride`, `c < 8`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose_8x8(
        src: *const f32,
        src_stride: usize,
        rows: usize,
        dst: *mut f32,
        dst_stride: usize,
    ) {
        // SAFETY: loads and stores as the contract allows.
        unsafe {
            let row = |r: usize| {
                if r < rows {
                    _mm256_loadu_ps(src.add(r * src_stride))
                } else {
                    _mm256_setzero_ps()
                }
            };
            let (a0, a1, a2, a3) = (row(0), row(1), row(2), row(3));
            let (a4, a5, a6, a7) = (row(4), row(5), row(6), row(7));
            let t0 = _mm256_unpacklo_ps(a0, a1);
            let t1 = _mm256_unpackhi_ps(a0, a1);
            let t2 = _mm256_unpacklo_ps(a2, a3);
            let t3 = _mm256_unpackhi_ps(a2, a3);
            let t4 = _mm256_unpacklo_ps(a4, a5);
            let t5 = _mm256_unpackhi_ps(a4, a5);
            let t6 = _mm256_unpacklo_ps(a6, a7);
            let t7 = _mm256_unpackhi_ps(a6, a7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (c, v) in cols.iter().enumerate() {
                let d = dst.add(c * dst_stride);
                if rows == 8 {
                    _mm256_storeu_ps(d, *v);
                } else {
                    _mm_storeu_ps(d, _mm256_castps256_ps128(*v));
                }
            }
        }
    }

    /// Weight rows per AVX2 kernel call (12 ymm accumulators for 6 × 16).
    pub const ROWS: usize = 6;

    /// `ROWS × 16` tile at `tile` (row stride `COL_BLOCK`) from `ROWS` rows of `w` (stride `k`)
    /// and 16 columns of the packed block at `xb` (row stride `COL_BLOCK`).
    ///
    /// With `accumulate`, the tile's previous contents are added to the sums before storing.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `w` must hold `ROWS` rows of stride `ldw` with `k`
    /// readable floats each; `xb` must allow reading 16 floats at every `kk · COL_BLOCK`,
    /// `kk < k`; `tile` must allow reading and writing 16 floats at every `r · COL_BLOCK`,
    /// `r < ROWS`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(
        w: *const f32,
        ldw: usize,
        k: usize,
        xb: *const f32,
        tile: *mut f32,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for kk in 0..k {
            // SAFETY: kk < k, so all reads stay within the sizes of the contract.
            unsafe {
                let xk = xb.add(kk * COL_BLOCK);
                let x0 = _mm256_loadu_ps(xk);
                let x1 = _mm256_loadu_ps(xk.add(8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_ps(*w.add(r * ldw + kk));
                    acc[0] = _mm256_fmadd_ps(x0, b, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x1, b, acc[1]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: r < ROWS; 16 floats per row as the contract allows.
            unsafe {
                let t = tile.add(r * COL_BLOCK);
                let (mut a0, mut a1) = (acc[0], acc[1]);
                if accumulate {
                    a0 = _mm256_add_ps(_mm256_loadu_ps(t), a0);
                    a1 = _mm256_add_ps(_mm256_loadu_ps(t.add(8)), a1);
                }
                _mm256_storeu_ps(t, a0);
                _mm256_storeu_ps(t.add(8), a1);
            }
        }
    }
}
