//! Launch wrappers, one per kernel family, with the same shapes as the CPU kernels so the
//! forward pass can run on either backend. Every wrapper validates sizes first (a bad call is
//! [`crate::Error::InvalidArgument`], never a device fault), then queues the kernel on the
//! backend's stream; results are visible after a read or [`CudaBackend::synchronize`].

use std::ops::Range;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchArgs, LaunchConfig, PushKernelArg};

use super::buffers::{
    DecodeStep, DeviceActivations, DeviceMatrix, DeviceVec, FfnCounters, KvCache, NeuronMajorDown,
    SparseFfnScratch, COUNT_STRIDE, SPARSE_DOWN_MAX_SLICES,
};
use super::device::{guard, CudaBackend};
use super::kernels::{has_q8_1_kernel, type_suffix};
use crate::quant::GgmlType;
use crate::{bail, Result};

/// Rows per block of the matvec and sparse kernels (`GC_MATVEC_ROWS`, `GC_SPARSE_ROWS`).
const ROWS_PER_BLOCK: u32 = 4;
/// Rows from which [`CudaBackend::rms_norm_quantize_rows`] uses the fused kernel.
const FUSED_NORM_MIN_ROWS: usize = 8;
/// Tokens per block of `gc_matmul_*` (`GC_MATMUL_COLS`).
const MATMUL_COLS: u32 = 8;
/// Rows and threads per block of `gc_matmul_*` (`GC_MATMUL_ROWS`, 8 warps).
const MATMUL_ROWS: u32 = 32;
const MATMUL_THREADS: u32 = 256;
/// Warps per block of `gc_sparse_down_*` (`GC_DOWN_WARPS`) and columns per tile (32 lanes
/// times `DownTile<T>::COLS`).
const SPARSE_DOWN_WARPS: usize = 8;
const SPARSE_DOWN_TILE_Q8_0: usize = 512;
const SPARSE_DOWN_TILE_Q4_0: usize = 1024;
/// `GC_ATTN_THREADS` and `GC_ATTN_CHUNK_MAX` in attention.cu.
const ATTN_THREADS: u32 = 128;
const ATTN_CHUNK_MAX: usize = 256;
const ATTN_CHUNK_MIN: usize = 32;
/// Positions per split when the range comes from a [`DecodeStep`] (the plan must fit any
/// position, so it is fixed: `max_ctx / 64` splits per head).
const ATTN_CHUNK_STEP: usize = 64;

/// The gate activation of a gated FFN (ids match `GC_ACT_*` in common.cuh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedActivation {
    /// SiLU (llama, SmolLM, Qwen): g * sigmoid(g).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

impl GatedActivation {
    fn id(self) -> i32 {
        match self {
            GatedActivation::Silu => 0,
            GatedActivation::GeluTanh => 1,
        }
    }
}

/// Which dimensions RoPE pairs up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// llama.cpp `LLAMA_ROPE_TYPE_NORM`: dims (2i, 2i+1).
    Normal,
    /// llama.cpp `LLAMA_ROPE_TYPE_NEOX`: dims (i, i + n_rot/2).
    Neox,
}

/// Parameters of one RoPE application.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub n_heads: usize,
    pub head_dim: usize,
    /// Rotated dims per head (even, at most `head_dim`).
    pub n_rot: usize,
    pub pos: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub style: RopeStyle,
}

/// Split-K partial results for [`CudaBackend::attention`], sized once for a model.
pub struct AttentionWorkspace {
    n_heads: usize,
    head_dim: usize,
    max_splits: usize,
    o_part: CudaSlice<f32>,
    ml_part: CudaSlice<f32>,
}

impl AttentionWorkspace {
    /// For `n_heads` query heads of `head_dim` over up to `max_ctx` positions.
    pub fn new(
        backend: &CudaBackend,
        n_heads: usize,
        head_dim: usize,
        max_ctx: usize,
    ) -> Result<Self> {
        if n_heads == 0 || head_dim == 0 || max_ctx == 0 {
            bail!(
                InvalidArgument,
                "attention workspace {n_heads} heads x {head_dim}, ctx {max_ctx}"
            );
        }
        let max_splits = max_ctx.div_ceil(ATTN_CHUNK_MIN);
        Ok(AttentionWorkspace {
            n_heads,
            head_dim,
            max_splits,
            o_part: backend.alloc_zeros(n_heads * max_splits * head_dim)?,
            ml_part: backend.alloc_zeros(2 * n_heads * max_splits)?,
        })
    }
}

fn grid_1d(n: usize, per_block: u32) -> Result<u32> {
    let blocks = n.div_ceil(per_block as usize);
    u32::try_from(blocks.max(1))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            crate::Error::InvalidArgument(format!("{n} elements exceed the launch grid"))
        })
}

fn cfg(grid: (u32, u32), block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// The null device pointer pushed for an absent optional kernel argument.
static NULL_DEVICE_PTR: u64 = 0;

/// Pushes an optional device-side `int*` argument (a [`DecodeStep`] field): the view, or a
/// null pointer, which the kernels read as "use the scalar argument instead".
fn arg_or_null<'a, 'b: 'a, 'c: 'b, T>(b: &mut LaunchArgs<'a>, v: Option<&'b CudaView<'c, T>>) {
    match v {
        Some(v) => b.arg(v),
        None => b.arg(&NULL_DEVICE_PTR),
    };
}

fn as_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| crate::Error::InvalidArgument(format!("{what} = {v} exceeds i32")))
}

impl CudaBackend {
    /// Quantizes `act.x` into its Q8_1 form (once per input vector, before the matvecs).
    pub fn quantize_activations(&self, act: &mut DeviceActivations) -> Result<()> {
        self.quantize_activations_prefix(act, act.len())
    }

    /// Quantizes the first `n` values of `act.x` (`n` a multiple of 32: whole rows of a batch).
    pub fn quantize_activations_prefix(&self, act: &mut DeviceActivations, n: usize) -> Result<()> {
        if n == 0 || n % 32 != 0 || n > act.len() {
            bail!(
                InvalidArgument,
                "quantize: {n} values of activations holding {}",
                act.len()
            );
        }
        let grid = grid_1d(n, 256)?;
        let n = as_i32(n, "activation length")?;
        let f = self.function("gc_quantize_q8_1")?;
        guard("launch gc_quantize_q8_1", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&act.x.data).arg(&mut act.qs).arg(&mut act.ds).arg(&n);
            // SAFETY: (const float* x, int8_t* xq, float2* xds, int n) matches the kernel;
            // x and qs hold n elements and ds n/32 pairs (DeviceActivations::new).
            unsafe { b.launch(cfg((grid, 1), 256, 0)) }.map(|_| ())
        })
    }

    /// `out = W x` (or `out += W x` with `accumulate`). Quantized types use the integer
    /// kernel and read `act`'s Q8_1 form (call [`Self::quantize_activations`] first);
    /// F16/F32 read `act.x`.
    pub fn matvec(
        &self,
        w: &DeviceMatrix,
        act: &DeviceActivations,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        self.matvec_rows(w, 0..w.n_rows, act, out, accumulate)
    }

    /// [`Self::matvec`] over the rows `rows` of `W` only (`out.len() == rows.len()`), the
    /// shape of the CPU `quant::matvec(ty, n_cols, weights, rows, act, out)`.
    pub fn matvec_rows(
        &self,
        w: &DeviceMatrix,
        rows: Range<usize>,
        act: &DeviceActivations,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        if !has_q8_1_kernel(w.ty) {
            return self.matvec_dequant_rows(w, rows, &act.x, out, accumulate);
        }
        check_matvec_shapes(w, &rows, act.len(), out)?;
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        self.launch_matvec_q8_1(
            w,
            rows,
            &act.qs.slice(..),
            &act.ds.slice(..),
            &mut out.data.slice_mut(..n),
            accumulate,
        )
    }

    /// Queues `gc_matvec_<type>` over rows `rows` of `w` (within `w`) with the
    /// Q8_1 activations `xq`/`xds` (at least `w.n_cols` values) into `out` (at least
    /// `rows.len()` floats). Callers check those sizes.
    fn launch_matvec_q8_1(
        &self,
        w: &DeviceMatrix,
        rows: Range<usize>,
        xq: &CudaView<i8>,
        xds: &CudaView<f32>,
        out: &mut CudaViewMut<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let name = format!("gc_matvec_{}", type_suffix(w.ty).unwrap_or_default());
        let f = self.function(&name)?;
        let (row_bytes, n_rows, n_cols, acc) = (
            w.row_bytes as u64,
            as_i32(rows.len(), "rows")?,
            w.n_cols as i32,
            accumulate as i32,
        );
        let grid = grid_1d(rows.len(), ROWS_PER_BLOCK)?;
        let first = w.data.slice(rows.start * w.row_bytes..);
        guard(&format!("launch {name}"), || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&first).arg(&row_bytes).arg(&n_rows).arg(&n_cols);
            b.arg(xq).arg(xds).arg(out).arg(&acc);
            // SAFETY: (const uint8_t* w, u64 row_bytes, int n_rows, int n_cols, const int8_t* xq,
            // const float2* xds, float* out, int accumulate) matches the kernel; `first` starts
            // at row rows.start and holds rows.len() rows, the activations n_cols values, out
            // rows.len() floats (checked by every caller).
            unsafe { b.launch(cfg((grid, 1), ROWS_PER_BLOCK * 32, 0)) }.map(|_| ())
        })
    }

    /// Queues `gc_matvec_f32x_<type>` over rows `rows` of `w` (within `w`) with
    /// f32 activations `x` (at least `w.n_cols` values) into `out` (at least `rows.len()`
    /// floats). Callers check those sizes.
    fn launch_matvec_f32x(
        &self,
        w: &DeviceMatrix,
        rows: Range<usize>,
        x: &CudaView<f32>,
        out: &mut CudaViewMut<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let name = format!("gc_matvec_f32x_{}", type_suffix(w.ty).unwrap_or_default());
        let f = self.function(&name)?;
        let (row_bytes, n_rows, n_cols, acc) = (
            w.row_bytes as u64,
            as_i32(rows.len(), "rows")?,
            w.n_cols as i32,
            accumulate as i32,
        );
        let grid = grid_1d(rows.len(), ROWS_PER_BLOCK)?;
        let first = w.data.slice(rows.start * w.row_bytes..);
        guard(&format!("launch {name}"), || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&first).arg(&row_bytes).arg(&n_rows).arg(&n_cols);
            b.arg(x).arg(out).arg(&acc);
            // SAFETY: (const uint8_t* w, u64 row_bytes, int n_rows, int n_cols, const float* x,
            // float* out, int accumulate) matches the kernel; sizes checked by every caller.
            unsafe { b.launch(cfg((grid, 1), ROWS_PER_BLOCK * 32, 0)) }.map(|_| ())
        })
    }

    /// `out[t] (+)= W x[t]` for the first `n_tok` rows of `act` (rows of `W.n_cols`, quantized
    /// with [`Self::quantize_activations_prefix`] for integer types) into the first `n_tok`
    /// rows of `out` (rows of `W.n_rows`): the prefill shape. Each weight unit read serves up
    /// to 8 tokens; the result of every (row, token) equals [`Self::matvec`]'s bit for bit.
    pub fn matmul(
        &self,
        w: &DeviceMatrix,
        act: &DeviceActivations,
        n_tok: usize,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        self.matmul_from(w, act, 0, n_tok, out, accumulate)
    }

    /// [`Self::matmul`] of activation rows `first..first + n_tok` (e.g. only the last token's
    /// row through the output head) into the first `n_tok` rows of `out`.
    pub fn matmul_from(
        &self,
        w: &DeviceMatrix,
        act: &DeviceActivations,
        first: usize,
        n_tok: usize,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        let (Some(n_in), Some(n_out)) = (
            (first + n_tok).checked_mul(w.n_cols),
            n_tok.checked_mul(w.n_rows),
        ) else {
            bail!(InvalidArgument, "matmul: {n_tok} tokens overflow");
        };
        if n_tok == 0 || n_in > act.len() || n_out > out.len() {
            bail!(
                InvalidArgument,
                "matmul: {n_tok} tokens through a {}x{} matrix with activations of {} and out of {}",
                w.n_rows,
                w.n_cols,
                act.len(),
                out.len()
            );
        }
        if !has_q8_1_kernel(w.ty) {
            // F16/F32: one dequantizing matvec per token over row views.
            for t in 0..n_tok {
                let x = act
                    .x
                    .data
                    .slice((first + t) * w.n_cols..(first + t + 1) * w.n_cols);
                let mut o = out.data.slice_mut(t * w.n_rows..(t + 1) * w.n_rows);
                self.launch_matvec_f32x(w, 0..w.n_rows, &x, &mut o, accumulate)?;
            }
            return Ok(());
        }
        let xq = act.qs.slice(first * w.n_cols..);
        let xds = act.ds.slice(2 * (first * w.n_cols / 32)..);
        if n_tok == 1 {
            // One token: the matvec kernel (no per-token unrolling, fewer registers).
            let mut o = out.data.slice_mut(..w.n_rows);
            return self.launch_matvec_q8_1(w, 0..w.n_rows, &xq, &xds, &mut o, accumulate);
        }
        let name = format!("gc_matmul_{}", type_suffix(w.ty).unwrap_or_default());
        let f = self.function(&name)?;
        let (row_bytes, n_rows, n_cols, nt, acc) = (
            w.row_bytes as u64,
            w.n_rows as i32,
            w.n_cols as i32,
            as_i32(n_tok, "n_tok")?,
            accumulate as i32,
        );
        let grid = (
            grid_1d(w.n_rows, MATMUL_ROWS)?,
            grid_1d(n_tok, MATMUL_COLS)?,
        );
        guard(&format!("launch {name}"), || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&w.data)
                .arg(&row_bytes)
                .arg(&n_rows)
                .arg(&n_cols)
                .arg(&nt);
            b.arg(&xq).arg(&xds).arg(&mut out.data).arg(&acc);
            // SAFETY: (const uint8_t* w, u64 row_bytes, int n_rows, int n_cols, int n_tok,
            // const int8_t* xq, const float2* xds, float* out, int accumulate) matches the
            // kernel; the activations hold n_tok rows of n_cols and out n_tok rows of n_rows
            // (checked above).
            unsafe { b.launch(cfg(grid, MATMUL_THREADS, 0)) }.map(|_| ())
        })
    }

    /// `out (+)= W x` with f32 activations, dequantizing weights in registers (the "DMMV"
    /// shape). The only path for F16/F32 weights; for quantized types it is the slower
    /// comparison variant measured by the GPU benchmarks.
    pub fn matvec_dequant(
        &self,
        w: &DeviceMatrix,
        x: &DeviceVec,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        self.matvec_dequant_rows(w, 0..w.n_rows, x, out, accumulate)
    }

    /// [`Self::matvec_dequant`] over the rows `rows` of `W` only.
    pub fn matvec_dequant_rows(
        &self,
        w: &DeviceMatrix,
        rows: Range<usize>,
        x: &DeviceVec,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        check_matvec_shapes(w, &rows, x.len(), out)?;
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        self.launch_matvec_f32x(
            w,
            rows,
            &x.data.slice(..),
            &mut out.data.slice_mut(..n),
            accumulate,
        )
    }

    /// RMSNorm of each `weight.len()`-long row of `x` into `out` (same length as `x`).
    pub fn rms_norm(
        &self,
        x: &DeviceVec,
        weight: &DeviceVec,
        out: &mut DeviceVec,
        eps: f32,
    ) -> Result<()> {
        if out.len() != x.len() {
            bail!(
                InvalidArgument,
                "rms_norm: output length {} for input {}",
                out.len(),
                x.len()
            );
        }
        let rows = check_norm_shapes(x.len(), weight.len())?;
        self.launch_rms_norm(&x.data, weight, &out.data, rows, eps)
    }

    /// RMSNorm of each `weight.len()`-long row of `x`, in place (also per-head q/k norms).
    pub fn rms_norm_inplace(&self, x: &mut DeviceVec, weight: &DeviceVec, eps: f32) -> Result<()> {
        let rows = check_norm_shapes(x.len(), weight.len())?;
        self.launch_rms_norm(&x.data, weight, &x.data, rows, eps)
    }

    /// [`Self::rms_norm`] over the first `rows` rows only (batches smaller than the buffers).
    pub fn rms_norm_rows(
        &self,
        x: &DeviceVec,
        weight: &DeviceVec,
        out: &mut DeviceVec,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let n = check_rows_fit(rows, weight.len(), x.len().min(out.len()))?;
        self.launch_rms_norm(&x.data, weight, &out.data, n, eps)
    }

    /// [`Self::rms_norm_rows`] of `x` into `act.x`, fused with
    /// [`Self::quantize_activations_prefix`] of those rows: one launch, the same values as the
    /// two calls.
    pub fn rms_norm_quantize_rows(
        &self,
        x: &DeviceVec,
        weight: &DeviceVec,
        act: &mut DeviceActivations,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let n = weight.len();
        let rows_u32 = check_rows_fit(rows, n, x.len().min(act.len()))?;
        if n % 32 != 0 {
            bail!(
                InvalidArgument,
                "rms_norm_quantize: rows of {n} are not whole 32-value blocks"
            );
        }
        if rows < FUSED_NORM_MIN_ROWS {
            // A block per row: for a few rows the fused kernel would quantize on a few SMs
            // only, slower than the separate, grid-wide quantization (measured on an H100).
            self.rms_norm_rows(x, weight, &mut act.x, rows, eps)?;
            return self.quantize_activations_prefix(act, rows * n);
        }
        let f = self.function("gc_rms_norm_q8_1")?;
        let threads = (n.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32;
        let n_i = as_i32(n, "row length")?;
        guard("launch gc_rms_norm_q8_1", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&x.data).arg(&weight.data).arg(&act.x.data);
            b.arg(&mut act.qs).arg(&mut act.ds).arg(&n_i).arg(&eps);
            // SAFETY: (const float* x, const float* weight, float* out, int8_t* xq, float2* xds,
            // int n, float eps) matches the kernel; x and act hold at least rows * n values
            // (checked above), weight n, n % 32 == 0; buffers are 256-byte aligned and rows a
            // multiple of 16 bytes, as the float4 loads need.
            unsafe { b.launch(cfg((rows_u32, 1), threads, 0)) }.map(|_| ())
        })
    }

    /// [`Self::rms_norm_inplace`] over the first `rows` rows only.
    pub fn rms_norm_inplace_rows(
        &self,
        x: &mut DeviceVec,
        weight: &DeviceVec,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let n = check_rows_fit(rows, weight.len(), x.len())?;
        self.launch_rms_norm(&x.data, weight, &x.data, n, eps)
    }

    fn launch_rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &DeviceVec,
        out: &CudaSlice<f32>,
        rows: u32,
        eps: f32,
    ) -> Result<()> {
        let f = self.function("gc_rms_norm")?;
        // One thread per float4 of the row (a multiple of 32, at most 1024).
        let threads = (weight.len().div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32;
        let n = weight.len() as i32;
        guard("launch gc_rms_norm", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(x).arg(&weight.data).arg(out).arg(&n).arg(&eps);
            // SAFETY: (const float* x, const float* weight, float* out, int n, float eps) matches
            // the kernel; x and out hold rows * n floats and weight n (checked by callers). The
            // caller holds `out` exclusively (or `x` mutably when they are the same buffer).
            // Device buffers start 256-byte aligned and rows are n floats apart, so with n a
            // multiple of 4 every row is float4-aligned.
            unsafe { b.launch(cfg((rows, 1), threads, 0)) }.map(|_| ())
        })
    }

    /// Rotary embedding of `x = [n_heads][head_dim]`, in place.
    pub fn rope(&self, x: &mut DeviceVec, p: &RopeParams) -> Result<()> {
        if x.len() != p.n_heads * p.head_dim {
            bail!(
                InvalidArgument,
                "rope: vector of {} for {} heads x {}",
                x.len(),
                p.n_heads,
                p.head_dim
            );
        }
        self.rope_rows(x, p, 1)
    }

    /// Rotary embedding of the first `n_tok` rows of `x = [n_tok][n_heads][head_dim]`, in
    /// place, row `t` at position `p.pos + t`.
    pub fn rope_rows(&self, x: &mut DeviceVec, p: &RopeParams, n_tok: usize) -> Result<()> {
        self.rope_impl(x, p, n_tok, None)
    }

    /// [`Self::rope`] at the position held by `step` (`p.pos` is ignored): the form a CUDA
    /// graph can replay at every position.
    /// Rotates the first row of `x` (which may hold more).
    pub fn rope_at_step(&self, x: &mut DeviceVec, p: &RopeParams, step: &DecodeStep) -> Result<()> {
        if x.len() < p.n_heads * p.head_dim {
            bail!(
                InvalidArgument,
                "rope: vector of {} for {} heads x {}",
                x.len(),
                p.n_heads,
                p.head_dim
            );
        }
        self.rope_impl(
            x,
            p,
            1,
            Some(&step.data.slice(DecodeStep::POS..DecodeStep::POS + 1)),
        )
    }

    fn rope_impl(
        &self,
        x: &mut DeviceVec,
        p: &RopeParams,
        n_tok: usize,
        pos_dev: Option<&CudaView<i32>>,
    ) -> Result<()> {
        if p.n_rot == 0 || p.n_rot % 2 != 0 || p.n_rot > p.head_dim || p.n_heads == 0 {
            bail!(
                InvalidArgument,
                "rope: n_rot {} with head_dim {} and {} heads",
                p.n_rot,
                p.head_dim,
                p.n_heads
            );
        }
        let row = p.n_heads * p.head_dim;
        if n_tok == 0 || n_tok.checked_mul(row).is_none_or(|n| n > x.len()) {
            bail!(
                InvalidArgument,
                "rope: {n_tok} rows of {} heads x {} in a vector of {}",
                p.n_heads,
                p.head_dim,
                x.len()
            );
        }
        let f = self.function("gc_rope")?;
        let (n_heads, head_dim, n_rot, pos) = (
            as_i32(p.n_heads, "n_heads")?,
            as_i32(p.head_dim, "head_dim")?,
            as_i32(p.n_rot, "n_rot")?,
            as_i32(p.pos, "pos")?,
        );
        let neox = (p.style == RopeStyle::Neox) as i32;
        let nt = as_i32(n_tok, "n_tok")?;
        let grid = grid_1d(n_tok * p.n_heads * p.n_rot / 2, 128)?;
        guard("launch gc_rope", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&mut x.data)
                .arg(&n_heads)
                .arg(&head_dim)
                .arg(&n_rot)
                .arg(&pos)
                .arg(&nt);
            b.arg(&p.freq_base).arg(&p.freq_scale).arg(&neox);
            arg_or_null(&mut b, pos_dev);
            // SAFETY: (float* x, int n_heads, int head_dim, int n_rot, int pos0, int n_tok,
            // float base, float scale, int neox, const int* pos_dev) matches the kernel; x holds
            // n_tok * n_heads * head_dim floats (checked above); pos_dev is null or one int.
            unsafe { b.launch(cfg((grid, 1), 128, 0)) }.map(|_| ())
        })
    }

    /// Stores this token's keys and values (`[n_kv_heads][head_dim]` each) at `pos`.
    pub fn kv_store(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        k: &DeviceVec,
        v: &DeviceVec,
    ) -> Result<()> {
        let n = cache.shape.n_kv_heads * cache.shape.head_dim;
        if k.len() != n || v.len() != n {
            bail!(
                InvalidArgument,
                "kv_store: k {} / v {} values, cache rows hold {n}",
                k.len(),
                v.len()
            );
        }
        self.kv_store_rows(cache, layer, pos, k, v, 1)
    }

    /// Stores the first `n_tok` rows of keys and values (`[n_tok][n_kv_heads][head_dim]`)
    /// at positions `pos..pos + n_tok`.
    pub fn kv_store_rows(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        k: &DeviceVec,
        v: &DeviceVec,
        n_tok: usize,
    ) -> Result<()> {
        self.kv_store_impl(cache, layer, pos, k, v, n_tok, None)
    }

    /// [`Self::kv_store`] at the position held by `step` (graph-replayable form).
    pub fn kv_store_at_step(
        &self,
        cache: &mut KvCache,
        layer: usize,
        k: &DeviceVec,
        v: &DeviceVec,
        step: &DecodeStep,
    ) -> Result<()> {
        let pos = step.data.slice(DecodeStep::POS..DecodeStep::POS + 1);
        // Position 0 for the checks; the step's position is validated by DecodeStep::set.
        self.kv_store_impl(cache, layer, 0, k, v, 1, Some(&pos))
    }

    #[allow(clippy::too_many_arguments)]
    fn kv_store_impl(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        k: &DeviceVec,
        v: &DeviceVec,
        n_tok: usize,
        pos_dev: Option<&CudaView<i32>>,
    ) -> Result<()> {
        let s = cache.shape;
        if layer >= s.n_layers || n_tok == 0 || pos + n_tok > s.max_ctx {
            bail!(
                InvalidArgument,
                "kv_store: layer {layer}/{} pos {pos}/{}",
                s.n_layers,
                s.max_ctx
            );
        }
        let n = s.n_kv_heads * s.head_dim;
        if k.len() < n * n_tok || v.len() < n * n_tok {
            bail!(
                InvalidArgument,
                "kv_store: k {} / v {} values for {n_tok} rows of {n}",
                k.len(),
                v.len()
            );
        }
        let f = self.function("gc_kv_store")?;
        let nt = n_tok as i32;
        let (n_kv, hd, max_ctx, pos) = (
            s.n_kv_heads as i32,
            s.head_dim as i32,
            s.max_ctx as i32,
            pos as i32,
        );
        let grid = grid_1d(n * n_tok, 128)?;
        let (kc, vc) = (&mut cache.k[layer], &mut cache.v[layer]);
        guard("launch gc_kv_store", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&k.data).arg(&v.data).arg(kc).arg(vc);
            b.arg(&n_kv).arg(&hd).arg(&max_ctx).arg(&pos).arg(&nt);
            arg_or_null(&mut b, pos_dev);
            // SAFETY: (const float* k, const float* v, half* k_cache, half* v_cache, int n_kv_heads,
            // int head_dim, int max_ctx, int pos0, int n_tok, const int* pos_dev) matches the
            // kernel; pos_dev is null or one int below max_ctx (DecodeStep::set);
            // pos0 + n_tok <= max_ctx, k and v hold n_tok rows, and the cache layer holds
            // n_kv_heads * max_ctx * head_dim halves (KvCache::new).
            unsafe { b.launch(cfg((grid, 1), 128, 0)) }.map(|_| ())
        })
    }

    /// Decode attention of `q = [n_heads][head_dim]` over cache positions `kv` of `layer`:
    /// softmax of the scores `scale * q.k` (capped to `c * tanh(score / c)` with
    /// `softcap = Some(c)`), weighted values into `out = [n_heads][head_dim]`. A sliding window
    /// is a `kv` range that starts after 0.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &DeviceVec,
        cache: &KvCache,
        layer: usize,
        kv: Range<usize>,
        scale: f32,
        softcap: Option<f32>,
        ws: &mut AttentionWorkspace,
        out: &mut DeviceVec,
    ) -> Result<()> {
        let (n_heads, hd) = (ws.n_heads, ws.head_dim);
        if q.len() != n_heads * hd || out.len() != n_heads * hd {
            bail!(
                InvalidArgument,
                "attention: q {} / out {} values for {n_heads} x {hd}",
                q.len(),
                out.len()
            );
        }
        self.attention_row(q, 0, cache, layer, kv, scale, softcap, ws, out)
    }

    /// [`Self::attention`] for row `row` of a batch of queries `q = [n_tok][n_heads][head_dim]`
    /// into row `row` of `out` (the prefill shape: one launch pair per token).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_row(
        &self,
        q: &DeviceVec,
        row: usize,
        cache: &KvCache,
        layer: usize,
        kv: Range<usize>,
        scale: f32,
        softcap: Option<f32>,
        ws: &mut AttentionWorkspace,
        out: &mut DeviceVec,
    ) -> Result<()> {
        self.attention_impl(q, row, cache, layer, kv, None, scale, softcap, ws, out)
    }

    /// [`Self::attention`] over the position range held by `step` (its sliding-window range
    /// with `window`): graph-replayable, with a fixed split plan covering the whole cache
    /// (splits past the range exit at once).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_at_step(
        &self,
        q: &DeviceVec,
        cache: &KvCache,
        layer: usize,
        step: &DecodeStep,
        window: bool,
        scale: f32,
        softcap: Option<f32>,
        ws: &mut AttentionWorkspace,
        out: &mut DeviceVec,
    ) -> Result<()> {
        let at = if window {
            DecodeStep::WINDOW
        } else {
            DecodeStep::FULL
        };
        let range = step.data.slice(at..at + 2);
        let all = 0..cache.shape.max_ctx;
        self.attention_impl(
            q,
            0,
            cache,
            layer,
            all,
            Some(&range),
            scale,
            softcap,
            ws,
            out,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_impl(
        &self,
        q: &DeviceVec,
        row: usize,
        cache: &KvCache,
        layer: usize,
        kv: Range<usize>,
        range_dev: Option<&CudaView<i32>>,
        scale: f32,
        softcap: Option<f32>,
        ws: &mut AttentionWorkspace,
        out: &mut DeviceVec,
    ) -> Result<()> {
        let s = cache.shape;
        let (n_heads, hd) = (ws.n_heads, ws.head_dim);
        if layer >= s.n_layers || hd != s.head_dim || n_heads % s.n_kv_heads != 0 {
            bail!(
                InvalidArgument,
                "attention: layer {layer}, {n_heads} heads x {hd} against cache {s:?}"
            );
        }
        if kv.start >= kv.end || kv.end > s.max_ctx {
            bail!(
                InvalidArgument,
                "attention: position range {kv:?} (cache holds {})",
                s.max_ctx
            );
        }
        let width = n_heads * hd;
        let rows = (row * width)..((row + 1) * width);
        if rows.end > q.len() || rows.end > out.len() {
            bail!(
                InvalidArgument,
                "attention: row {row} of {n_heads} x {hd} beyond q {} / out {}",
                q.len(),
                out.len()
            );
        }
        let q_row = q.data.slice(rows.clone());
        let mut out_row = out.data.slice_mut(rows);
        let len = kv.end - kv.start;
        let sms = self.info().multiprocessor_count.max(1) as usize;
        let want_splits = (2 * sms).div_ceil(n_heads);
        let splits = want_splits.clamp(
            len.div_ceil(ATTN_CHUNK_MAX),
            len.div_ceil(ATTN_CHUNK_MIN).max(1),
        );
        let chunk = len.div_ceil(splits);
        let splits = len.div_ceil(chunk);
        // With the range in device memory, a plan that fits any range of the cache.
        let (chunk, splits) = match range_dev {
            Some(_) => (ATTN_CHUNK_STEP, s.max_ctx.div_ceil(ATTN_CHUNK_STEP)),
            None => (chunk, splits),
        };
        if splits > ws.max_splits {
            bail!(
                InvalidArgument,
                "attention: {len} positions exceed the workspace"
            );
        }

        let partial = self.function("gc_attn_partial")?;
        let combine = self.function("gc_attn_combine")?;
        let (nh, nkv, hd_i, max_ctx) = (
            n_heads as i32,
            s.n_kv_heads as i32,
            hd as i32,
            s.max_ctx as i32,
        );
        let (start, end, chunk_i, splits_i) =
            (kv.start as i32, kv.end as i32, chunk as i32, splits as i32);
        let shared = (hd * 4) as u32;
        let cap = match softcap {
            Some(c) if c > 0.0 && c.is_finite() => c,
            Some(c) => bail!(
                InvalidArgument,
                "attention: softcap {c} is not positive and finite"
            ),
            None => 0.0,
        };
        guard("launch gc_attn_partial", || {
            let mut b = self.stream().launch_builder(partial);
            b.arg(&q_row)
                .arg(&cache.k[layer])
                .arg(&cache.v[layer])
                .arg(&mut ws.o_part)
                .arg(&mut ws.ml_part);
            b.arg(&nh)
                .arg(&nkv)
                .arg(&hd_i)
                .arg(&max_ctx)
                .arg(&start)
                .arg(&end)
                .arg(&chunk_i)
                .arg(&scale)
                .arg(&cap);
            arg_or_null(&mut b, range_dev);
            // SAFETY: (const float* q, const half* k_cache, const half* v_cache, float* o_part,
            // float2* ml_part, int n_heads, int n_kv_heads, int head_dim, int max_ctx, int kv_start,
            // int kv_end, int chunk, float scale, float softcap, const int* range_dev) matches the
            // kernel; range_dev is null or two ints within the cache (DecodeStep::set); chunk <= GC_ATTN_CHUNK_MAX,
            // splits <= workspace splits, kv_end <= max_ctx, head_dim floats of dynamic shared memory.
            unsafe {
                b.launch(LaunchConfig {
                    grid_dim: (n_heads as u32, splits as u32, 1),
                    block_dim: (ATTN_THREADS, 1, 1),
                    shared_mem_bytes: shared,
                })
            }
            .map(|_| ())
        })?;
        guard("launch gc_attn_combine", || {
            let mut b = self.stream().launch_builder(combine);
            b.arg(&ws.o_part)
                .arg(&ws.ml_part)
                .arg(&mut out_row)
                .arg(&hd_i)
                .arg(&splits_i);
            // SAFETY: (const float* o_part, const float2* ml_part, float* out, int head_dim,
            // int n_splits) matches the kernel; the partials were written for `splits` splits.
            unsafe { b.launch(cfg((n_heads as u32, 1), 128, 0)) }.map(|_| ())
        })
    }

    /// `out = table[token] * scale`, dequantized.
    pub fn embed(
        &self,
        table: &DeviceMatrix,
        token: u32,
        scale: f32,
        out: &mut DeviceVec,
    ) -> Result<()> {
        if out.len() != table.n_cols {
            bail!(
                InvalidArgument,
                "embed: output of {} for rows of {}",
                out.len(),
                table.n_cols
            );
        }
        self.embed_row(table, token, scale, out, 0)
    }

    /// `out[row] = table[token] * scale` for row `row` of a batch of `table.n_cols`-long rows.
    pub fn embed_row(
        &self,
        table: &DeviceMatrix,
        token: u32,
        scale: f32,
        out: &mut DeviceVec,
        row: usize,
    ) -> Result<()> {
        if token as usize >= table.n_rows {
            bail!(
                InvalidArgument,
                "embed: token {token} out of range (vocabulary {})",
                table.n_rows
            );
        }
        self.embed_impl(table, token, scale, out, row, None)
    }

    /// [`Self::embed`] of the token held by `step` into the first row of `out` (which may
    /// hold more): the graph-replayable form.
    pub fn embed_at_step(
        &self,
        table: &DeviceMatrix,
        scale: f32,
        out: &mut DeviceVec,
        step: &DecodeStep,
    ) -> Result<()> {
        if out.len() < table.n_cols {
            bail!(
                InvalidArgument,
                "embed: output of {} for rows of {}",
                out.len(),
                table.n_cols
            );
        }
        let token = step.data.slice(DecodeStep::TOKEN..DecodeStep::TOKEN + 1);
        self.embed_impl(table, 0, scale, out, 0, Some(&token))
    }

    fn embed_impl(
        &self,
        table: &DeviceMatrix,
        token: u32,
        scale: f32,
        out: &mut DeviceVec,
        row: usize,
        token_dev: Option<&CudaView<i32>>,
    ) -> Result<()> {
        let rows = row * table.n_cols..(row + 1) * table.n_cols;
        if rows.end > out.len() {
            bail!(
                InvalidArgument,
                "embed: row {row} of {} beyond an output of {}",
                table.n_cols,
                out.len()
            );
        }
        let mut out_row = out.data.slice_mut(rows);
        let name = format!("gc_embed_{}", type_suffix(table.ty).unwrap_or_default());
        let f = self.function(&name)?;
        let (row_bytes, tok, n_cols) = (table.row_bytes as u64, token as i32, table.n_cols as i32);
        let grid = grid_1d(table.n_cols / 32, 64)?;
        guard(&format!("launch {name}"), || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&table.data)
                .arg(&row_bytes)
                .arg(&tok)
                .arg(&n_cols)
                .arg(&scale)
                .arg(&mut out_row);
            arg_or_null(&mut b, token_dev);
            // SAFETY: (const uint8_t* table, u64 row_bytes, int token, int n_cols, float scale,
            // float* out, const int* token_dev) matches the kernel; token < n_rows (checked by
            // embed_row, or by DecodeStep::set for token_dev) and out holds n_cols floats.
            unsafe { b.launch(cfg((grid, 1), 64, 0)) }.map(|_| ())
        })
    }

    /// `gate[i] = act(gate[i]) * up[i]`, in place.
    pub fn gated_activation(
        &self,
        gate: &mut DeviceVec,
        up: &DeviceVec,
        act: GatedActivation,
    ) -> Result<()> {
        if gate.len() != up.len() {
            bail!(
                InvalidArgument,
                "gated_activation: gate {} vs up {}",
                gate.len(),
                up.len()
            );
        }
        self.gated_activation_prefix(gate, up, act, gate.len())
    }

    /// [`Self::gated_activation`] over the first `n` values only.
    pub fn gated_activation_prefix(
        &self,
        gate: &mut DeviceVec,
        up: &DeviceVec,
        act: GatedActivation,
        n: usize,
    ) -> Result<()> {
        if n == 0 || n > gate.len() || n > up.len() {
            bail!(
                InvalidArgument,
                "gated_activation: {n} values of gate {} / up {}",
                gate.len(),
                up.len()
            );
        }
        let f = self.function("gc_gated_act")?;
        let grid = grid_1d(n, 256)?;
        let (n, a) = (as_i32(n, "length")?, act.id());
        let g = &gate.data;
        guard("launch gc_gated_act", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(g).arg(&up.data).arg(g).arg(&n).arg(&a);
            // SAFETY: (const float* gate, const float* up, float* out, int n, int act) matches the
            // kernel; out aliases gate, which the caller holds mutably; both hold n floats.
            unsafe { b.launch(cfg((grid, 1), 256, 0)) }.map(|_| ())
        })
    }

    /// `x += y` (the residual stream).
    pub fn add_inplace(&self, x: &mut DeviceVec, y: &DeviceVec) -> Result<()> {
        if x.len() != y.len() {
            bail!(InvalidArgument, "add_inplace: {} vs {}", x.len(), y.len());
        }
        self.add_rows(x, 0, y, 0, x.len())
    }

    /// `x[x_at..x_at + n] += y[y_at..y_at + n]` (batched residuals; a bias added to one row).
    pub fn add_rows(
        &self,
        x: &mut DeviceVec,
        x_at: usize,
        y: &DeviceVec,
        y_at: usize,
        n: usize,
    ) -> Result<()> {
        if n == 0 || x_at + n > x.len() || y_at + n > y.len() {
            bail!(
                InvalidArgument,
                "add: {n} values at {x_at} / {y_at} of vectors of {} / {}",
                x.len(),
                y.len()
            );
        }
        let f = self.function("gc_add_inplace")?;
        let grid = grid_1d(n, 256)?;
        let n_i = as_i32(n, "length")?;
        let mut xv = x.data.slice_mut(x_at..x_at + n);
        let yv = y.data.slice(y_at..y_at + n);
        guard("launch gc_add_inplace", || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&mut xv).arg(&yv).arg(&n_i);
            // SAFETY: (float* x, const float* y, int n) matches the kernel; both hold n floats.
            unsafe { b.launch(cfg((grid, 1), 256, 0)) }.map(|_| ())
        })
    }

    /// Sparse gated FFN for one token: `a_n = act(gate_n . x)` is kept where
    /// `|a_n| * scale_n > rule.act_threshold`; for kept neurons only, `h_n = a_n * (up_n . x)`,
    /// kept where `|h_n| > rule.product_threshold`; `out (+)= sum_n h_n * down[:, n]` over the
    /// neuron-major `down` copy, reading only the rows with `h_n != 0`. `x` must already be
    /// quantized ([`Self::quantize_activations`]). The result does not depend on scheduling.
    #[allow(clippy::too_many_arguments)]
    pub fn sparse_ffn(
        &self,
        gate: &DeviceMatrix,
        up: &DeviceMatrix,
        down: &NeuronMajorDown,
        x: &DeviceActivations,
        act: GatedActivation,
        rule: &SparseFfnRule,
        scratch: &mut SparseFfnScratch,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        // The halves check gate, up, scale and scratch before their launches; what they
        // leave open (exact widths, and down against gate, before anything is launched) is
        // checked here.
        let (n_ff, n_embd) = (gate.n_rows, gate.n_cols);
        if x.len() != n_embd || out.len() != n_embd || down.n_ff != n_ff || down.n_embd != n_embd {
            bail!(
                InvalidArgument,
                "sparse_ffn: x of {}, out of {}, down {}x{} for gate {n_ff}x{n_embd}",
                x.len(),
                out.len(),
                down.n_ff,
                down.n_embd
            );
        }
        self.sparse_gate_up(gate, up, x, act, rule, scratch)?;
        self.sparse_down(down, scratch, out, accumulate)
    }

    /// The first half of [`Self::sparse_ffn`]: the gate test and up for the kept neurons,
    /// into `scratch` (`a` and `h`).
    pub fn sparse_gate_up(
        &self,
        gate: &DeviceMatrix,
        up: &DeviceMatrix,
        x: &DeviceActivations,
        act: GatedActivation,
        rule: &SparseFfnRule,
        scratch: &mut SparseFfnScratch,
    ) -> Result<()> {
        if scratch.n_ff != gate.n_rows || scratch.n_embd != gate.n_cols {
            bail!(
                InvalidArgument,
                "sparse_gate_up: scratch {}x{} for gate {}x{}",
                scratch.n_ff,
                scratch.n_embd,
                gate.n_rows,
                gate.n_cols
            );
        }
        self.ffn_gate_up_into(
            gate,
            up,
            x,
            act,
            rule,
            Some(&mut scratch.a),
            &mut scratch.h,
            None,
        )
    }

    /// The second half of [`Self::sparse_ffn`]: `out[..n_embd] (+)= sum_n h_n * down[:, n]`
    /// over the neurons with `h_n != 0` in `scratch`.
    pub fn sparse_down(
        &self,
        down: &NeuronMajorDown,
        scratch: &mut SparseFfnScratch,
        out: &mut DeviceVec,
        accumulate: bool,
    ) -> Result<()> {
        let (n_ff, n_embd) = (down.n_ff, down.n_embd);
        if scratch.n_ff != n_ff || scratch.n_embd != n_embd || out.len() < n_embd {
            bail!(
                InvalidArgument,
                "sparse_down: down {n_ff}x{n_embd}, scratch {}x{}, out {}",
                scratch.n_ff,
                scratch.n_embd,
                out.len()
            );
        }
        let (down_name, tile) = match down.ty {
            GgmlType::Q4_0 => ("gc_sparse_down_q4_0", SPARSE_DOWN_TILE_Q4_0),
            _ => ("gc_sparse_down_q8_0", SPARSE_DOWN_TILE_Q8_0),
        };
        let fd = self.function(down_name)?;
        let down_rb = down.row_bytes as u64;
        let (n_ff_i, n_embd_i) = (as_i32(n_ff, "n_ff")?, as_i32(n_embd, "n_embd")?);
        // Column tiles x neuron slices: about two blocks per SM (more slices mean more
        // partial sums to add), each slice at least one 32-neuron chunk per warp.
        let n_tiles = n_embd.div_ceil(tile);
        let sms = self.info().multiprocessor_count.max(1) as usize;
        let max_slices = n_ff
            .div_ceil(32 * SPARSE_DOWN_WARPS)
            .clamp(1, SPARSE_DOWN_MAX_SLICES);
        let want = (2 * sms).div_ceil(n_tiles).clamp(1, max_slices);
        let slice_len = n_ff.div_ceil(want).div_ceil(32) * 32;
        let n_slices = n_ff.div_ceil(slice_len);
        let (slice_i, acc_i) = (as_i32(slice_len, "slice")?, i32::from(accumulate));
        guard(&format!("launch {down_name}"), || {
            let mut b = self.stream().launch_builder(fd);
            b.arg(&down.data)
                .arg(&down_rb)
                .arg(&n_ff_i)
                .arg(&n_embd_i)
                .arg(&slice_i)
                .arg(&scratch.h);
            b.arg(&mut scratch.partials)
                .arg(&mut scratch.tickets)
                .arg(&mut out.data)
                .arg(&acc_i);
            // SAFETY: (const uint8_t* d_rows, u64 row_bytes, int n_ff, int n_embd, int
            // slice_len, const float* h, float* partials, unsigned* tickets, float* out, int
            // accumulate) matches the kernel; down holds n_ff padded rows of n_embd (a multiple
            // of 32, checked at upload); partials hold n_slices <= SPARSE_DOWN_MAX_SLICES rows
            // of n_embd; tickets one zero per tile (the kernel leaves them at zero); out n_embd.
            unsafe {
                b.launch(cfg(
                    (n_tiles as u32, n_slices as u32),
                    SPARSE_DOWN_WARPS as u32 * 32,
                    0,
                ))
            }
            .map(|_| ())
        })
    }

    /// The dense gate, up and gated activation of one decode token in one launch:
    /// `h[..n_ff] = act(gate . x) * (up . x)` (`x`: the first `n_embd` activations, quantized).
    /// Same kernel as the sparse FFN with nothing skipped; see [`Self::can_fuse_gate_up`].
    pub fn ffn_gate_up(
        &self,
        gate: &DeviceMatrix,
        up: &DeviceMatrix,
        x: &DeviceActivations,
        act: GatedActivation,
        h: &mut DeviceVec,
    ) -> Result<()> {
        if h.len() < gate.n_rows {
            bail!(
                InvalidArgument,
                "ffn_gate_up: output of {} for {} neurons",
                h.len(),
                gate.n_rows
            );
        }
        let dense = SparseFfnRule::act(f32::NEG_INFINITY);
        self.ffn_gate_up_into(gate, up, x, act, &dense, None, &mut h.data, None)
    }

    /// Whether [`Self::ffn_gate_up`] takes this pair: same integer-kernel type and shape.
    pub fn can_fuse_gate_up(gate: &DeviceMatrix, up: &DeviceMatrix) -> bool {
        gate.ty == up.ty
            && gate.row_bytes == up.row_bytes
            && (gate.n_rows, gate.n_cols) == (up.n_rows, up.n_cols)
            && has_q8_1_kernel(gate.ty)
    }

    /// Launches `gc_ffn_gate_up_<type>` writing `a_out` (when given) and `h`, `n_ff` each,
    /// and adding to layer `counts.1` of `counts.0` (when given).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ffn_gate_up_into(
        &self,
        gate: &DeviceMatrix,
        up: &DeviceMatrix,
        x: &DeviceActivations,
        act: GatedActivation,
        rule: &SparseFfnRule,
        a_out: Option<&mut CudaSlice<f32>>,
        h: &mut CudaSlice<f32>,
        counts: Option<(&mut FfnCounters, usize)>,
    ) -> Result<()> {
        let n_ff = gate.n_rows;
        let n_embd = gate.n_cols;
        if x.len() < n_embd
            || up.n_cols != n_embd
            || up.n_rows != n_ff
            || gate.ty != up.ty
            || gate.row_bytes != up.row_bytes
            || h.len() < n_ff
            || a_out.as_ref().is_some_and(|a| a.len() < n_ff)
            || rule.neuron_scale.is_some_and(|s| s.len() != n_ff)
        {
            bail!(
                InvalidArgument,
                "ffn_gate_up: gate {}x{} {} / up {}x{} {} for x of {n_embd}",
                gate.n_rows,
                gate.n_cols,
                gate.ty.name(),
                up.n_rows,
                up.n_cols,
                up.ty.name()
            );
        }
        if !has_q8_1_kernel(gate.ty) {
            bail!(
                Unsupported,
                "ffn_gate_up: gate/up type {} has no integer kernel",
                gate.ty.name()
            );
        }
        let name = format!(
            "gc_ffn_gate_up_{}",
            type_suffix(gate.ty).unwrap_or_default()
        );
        let f = self.function(&name)?;
        let rb = gate.row_bytes as u64;
        let (n_ff_i, n_embd_i, act_i) =
            (as_i32(n_ff, "n_ff")?, as_i32(n_embd, "n_embd")?, act.id());
        let (act_t, prod_t) = (rule.act_threshold, rule.product_threshold);
        let scale = rule.neuron_scale.map(|s| s.data.slice(..));
        let mut a_view = a_out.map(|a| a.slice_mut(..));
        let mut count_view = match counts {
            Some((c, layer)) if layer < c.n_layer => Some(
                c.data
                    .slice_mut(layer * COUNT_STRIDE..(layer + 1) * COUNT_STRIDE),
            ),
            Some((c, layer)) => bail!(
                InvalidArgument,
                "FFN counters of {} layers, layer {layer}",
                c.n_layer
            ),
            None => None,
        };
        let grid = grid_1d(n_ff, ROWS_PER_BLOCK)?;
        guard(&format!("launch {name}"), || {
            let mut b = self.stream().launch_builder(f);
            b.arg(&gate.data)
                .arg(&up.data)
                .arg(&rb)
                .arg(&n_ff_i)
                .arg(&n_embd_i)
                .arg(&x.qs)
                .arg(&x.ds);
            b.arg(&act_i).arg(&act_t);
            arg_or_null(&mut b, scale.as_ref());
            b.arg(&prod_t);
            match a_view.as_mut() {
                Some(a) => b.arg(a),
                None => b.arg(&NULL_DEVICE_PTR),
            };
            b.arg(&mut *h);
            match count_view.as_mut() {
                Some(c) => b.arg(c),
                None => b.arg(&NULL_DEVICE_PTR),
            };
            // SAFETY: (const uint8_t* gate, const uint8_t* up, u64 row_bytes, int n_ff, int
            // n_cols, const int8_t* xq, const float2* xds, int act, float act_threshold, const
            // float* scale, float product_threshold, float* a_out, float* h, u64* counts)
            // matches the kernel; gate and up hold n_ff rows of row_bytes; scale (or null),
            // a_out (or null) and h hold at least n_ff floats; counts (or null) one layer's
            // 2 * GC_COUNT_SLOTS counters.
            unsafe { b.launch(cfg((grid, 1), ROWS_PER_BLOCK * 32, 0)) }.map(|_| ())
        })
    }
}

/// Which neurons [`CudaBackend::sparse_ffn`] keeps: the GPU form of one layer's sparsity rule.
#[derive(Clone, Copy)]
pub struct SparseFfnRule<'a> {
    /// Neuron `n` passes the gate when `|act(gate_n . x)| * scale_n > act_threshold`
    /// (negative: every neuron).
    pub act_threshold: f32,
    /// Per-neuron weights of the gate score (the calibrated mean `|up_n . x|` of the `upw`
    /// score); `None` scores by `|act|` alone.
    pub neuron_scale: Option<&'a DeviceVec>,
    /// Down reads neuron `n` only when `|h_n| > product_threshold` (negative: every neuron
    /// that passed the gate).
    pub product_threshold: f32,
}

impl SparseFfnRule<'static> {
    /// CATS: `|act(gate . x)| > threshold`, no product stage.
    pub fn act(threshold: f32) -> Self {
        SparseFfnRule {
            act_threshold: threshold,
            neuron_scale: None,
            product_threshold: -1.0,
        }
    }
}

fn check_matvec_shapes(
    w: &DeviceMatrix,
    rows: &Range<usize>,
    x_len: usize,
    out: &DeviceVec,
) -> Result<()> {
    if rows.start > rows.end || rows.end > w.n_rows || x_len != w.n_cols || out.len() != rows.len()
    {
        bail!(
            InvalidArgument,
            "matvec: rows {rows:?} of a {}x{} {} matrix with x of {x_len} and out of {}",
            w.n_rows,
            w.n_cols,
            w.ty.name(),
            out.len()
        );
    }
    Ok(())
}

fn check_rows_fit(rows: usize, n: usize, len: usize) -> Result<u32> {
    if rows == 0 || n == 0 || rows.checked_mul(n).is_none_or(|t| t > len) {
        bail!(
            InvalidArgument,
            "rms_norm: {rows} rows of {n} in a buffer of {len}"
        );
    }
    u32::try_from(rows).map_err(|_| crate::Error::InvalidArgument("rms_norm: too many rows".into()))
}

fn check_norm_shapes(x_len: usize, n: usize) -> Result<u32> {
    if n == 0 || x_len % n != 0 || x_len == 0 {
        bail!(
            InvalidArgument,
            "rms_norm: input of {x_len} is not whole rows of {n}"
        );
    }
    u32::try_from(x_len / n)
        .map_err(|_| crate::Error::InvalidArgument("rms_norm: too many rows".into()))
}
