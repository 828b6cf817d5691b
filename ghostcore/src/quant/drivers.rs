//! Matrix drivers over the row-dot kernels, as the forward pass calls them. Each works
//! single-threaded on a range or list of weight rows; the caller's thread pool splits rows.
//!
//! A weight matrix is `n_rows` rows of `n_cols` weights of type `ty`, row `r` starting at
//! byte `r * ty.row_bytes(n_cols)`; activations are rows quantized as
//! [`vec_dot_type(ty)`](crate::quant::vec_dot_type). All lengths are checked up front and a
//! mismatch is an `InvalidArgument` error; nothing here panics on bad input.

use std::ops::Range;

use crate::error::Result;
use crate::quant::activation::vec_dot_type;
use crate::quant::dequant::dequantize_row;
use crate::quant::kernels::{
    active_isa, prepared_row_dot_for, row_dot_for, row_dot_multi_for, row_len, Isa, PreparedBlock,
    RowDot, MULTI_ACT_ROWS,
};
use crate::quant::types::GgmlType;

/// Weight rows per tile in [`matmul`]: each tile is read once per activation row from cache.
const MATMUL_ROW_TILE: usize = 16;
/// Activation rows per tile in [`matmul`].
const MATMUL_ACT_TILE: usize = 64;

struct Checked {
    ty: GgmlType,
    isa: Isa,
    kernel: RowDot,
    w_row: usize,
    a_row: usize,
    n_rows: usize,
}

fn check(ty: GgmlType, n_cols: usize, weights: &[u8]) -> Result<Checked> {
    check_with(active_isa(), ty, n_cols, weights)
}

fn check_with(isa: Isa, ty: GgmlType, n_cols: usize, weights: &[u8]) -> Result<Checked> {
    let Some(kernel) = row_dot_for(ty, isa) else {
        crate::bail!(Unsupported, "no dot-product kernel for {ty} weights");
    };
    let vdt = vec_dot_type(ty);
    let (Some(w_row), Some(a_row)) = (row_len(ty, n_cols), row_len(vdt, n_cols)) else {
        crate::bail!(
            InvalidArgument,
            "{n_cols} columns is not a whole number of {ty} blocks"
        );
    };
    if w_row == 0 || weights.len() % w_row != 0 {
        crate::bail!(
            InvalidArgument,
            "{ty} weights of {} bytes are not whole rows of {n_cols} columns ({w_row} bytes)",
            weights.len()
        );
    }
    Ok(Checked {
        ty,
        isa,
        kernel,
        w_row,
        a_row,
        n_rows: weights.len() / w_row,
    })
}

fn check_rows(rows: &Range<usize>, n_rows: usize) -> Result<()> {
    if rows.start > rows.end || rows.end > n_rows {
        crate::bail!(
            InvalidArgument,
            "row range {rows:?} outside a matrix of {n_rows} rows"
        );
    }
    Ok(())
}

/// `out[i] = dot(weight row rows.start + i, act)` for every row in `rows`.
///
/// `weights` is the whole matrix; `act` one activation row (`vec_dot_type(ty).row_bytes(n_cols)`
/// bytes); `out.len() == rows.len()`.
pub fn matvec(
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    rows: Range<usize>,
    act: &[u8],
    out: &mut [f32],
) -> Result<()> {
    matvec_with_isa(active_isa(), ty, n_cols, weights, rows, act, out)
}

/// [`matvec`] with the kernels of `isa` (scalar where `isa` is unavailable); for benchmarks
/// and tests that compare instruction sets.
pub fn matvec_with_isa(
    isa: Isa,
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    rows: Range<usize>,
    act: &[u8],
    out: &mut [f32],
) -> Result<()> {
    let c = check_with(isa, ty, n_cols, weights)?;
    check_rows(&rows, c.n_rows)?;
    if act.len() != c.a_row || out.len() != rows.len() {
        crate::bail!(
            InvalidArgument,
            "matvec {ty}: activation {} bytes (want {}), output {} (want {})",
            act.len(),
            c.a_row,
            out.len(),
            rows.len()
        );
    }
    let w = &weights[rows.start * c.w_row..rows.end * c.w_row];
    dot_rows(&c, RowSet::Contiguous(w), act, out);
    Ok(())
}

thread_local! {
    /// Scratch for the prepared activation blocks of [`dot_rows`].
    static PREPARED: std::cell::RefCell<Vec<PreparedBlock>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Which weight rows a [`dot_rows`] call reads: consecutive rows held back to back, or the
/// listed rows of a whole matrix.
#[derive(Clone, Copy)]
enum RowSet<'w, 'i> {
    Contiguous(&'w [u8]),
    Gathered { weights: &'w [u8], ids: &'i [u32] },
}

impl<'w> RowSet<'w, '_> {
    /// Row `k` of the set (bounds-checked); a gathered walk prefetches a few rows ahead.
    #[inline]
    fn row(&self, w_row: usize, k: usize) -> &'w [u8] {
        match *self {
            RowSet::Contiguous(w) => &w[k * w_row..(k + 1) * w_row],
            RowSet::Gathered { weights, ids } => {
                gathered_row(weights, w_row, ids, k, gather_prefetch_rows(w_row))
            }
        }
    }
}

/// `out[k] = dot(row k of rows, act)` for every `k < out.len()`. Where the weight type has a
/// prepared-activation kernel, the activation row is prepared once and shared by all rows
/// (bit-identical to the plain kernel), and a whole-set kernel runs where the kernel set has
/// one for this kind of set.
#[inline]
fn dot_rows(c: &Checked, rows: RowSet<'_, '_>, act: &[u8], out: &mut [f32]) {
    const MIN_ROWS_TO_PREPARE: usize = 4;
    let prepared = (out.len() >= MIN_ROWS_TO_PREPARE)
        .then(|| prepared_row_dot_for(c.ty, c.isa))
        .flatten();
    let Some(kernels) = prepared else {
        for (k, o) in out.iter_mut().enumerate() {
            *o = (c.kernel)(rows.row(c.w_row, k), act);
        }
        return;
    };
    let n_blocks = act.len() / vec_dot_type(c.ty).type_size();
    PREPARED.with(|p| {
        let mut pre = p.borrow_mut();
        pre.clear();
        pre.resize(n_blocks, PreparedBlock::ZERO);
        (kernels.prepare)(act, &mut pre);
        match (rows, kernels.rows, kernels.rows_gather) {
            (RowSet::Contiguous(w), Some(rows_kernel), _) => {
                rows_kernel(w, c.w_row, act, &pre, out)
            }
            (RowSet::Gathered { weights, ids }, _, Some(gather_kernel)) => {
                gather_kernel(weights, c.w_row, ids, act, &pre, out)
            }
            _ => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = (kernels.row)(rows.row(c.w_row, k), act, &pre);
                }
            }
        }
    });
}

/// `out[j * out_stride + (r - rows.start)] = dot(weight row r, activation row j)` for the
/// `m` activation rows in `acts` (each `vec_dot_type(ty).row_bytes(n_cols)` bytes) and every
/// `r` in `rows`. Requires `out_stride >= rows.len()` and room for `m` strided output rows.
///
/// Weight rows are processed in tiles, each read from cache for a whole tile of activation
/// rows, so a prompt batch streams the weights from memory about once.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    rows: Range<usize>,
    acts: &[u8],
    m: usize,
    out: &mut [f32],
    out_stride: usize,
) -> Result<()> {
    let c = check(ty, n_cols, weights)?;
    check_rows(&rows, c.n_rows)?;
    let n_out = rows.len();
    let need_out = if m == 0 {
        0
    } else {
        (m - 1)
            .checked_mul(out_stride)
            .and_then(|v| v.checked_add(n_out))
            .unwrap_or(usize::MAX)
    };
    if Some(acts.len()) != m.checked_mul(c.a_row) || out_stride < n_out || out.len() < need_out {
        crate::bail!(
            InvalidArgument,
            "matmul {ty}: {m} activation rows need {} bytes (got {}), output stride {out_stride} \
             for {n_out} rows, output length {} (need {need_out})",
            m.saturating_mul(c.a_row),
            acts.len(),
            out.len()
        );
    }
    if m == 0 || n_out == 0 {
        return Ok(());
    }
    let w = &weights[rows.start * c.w_row..rows.end * c.w_row];
    let multi = row_dot_multi_for(ty, active_isa());
    for j0 in (0..m).step_by(MATMUL_ACT_TILE) {
        let j1 = (j0 + MATMUL_ACT_TILE).min(m);
        for r0 in (0..n_out).step_by(MATMUL_ROW_TILE) {
            let r1 = (r0 + MATMUL_ROW_TILE).min(n_out);
            let tile = &w[r0 * c.w_row..r1 * c.w_row];
            let act = |j: usize| &acts[j * c.a_row..(j + 1) * c.a_row];
            let mut j = j0;
            if let Some(multi) = multi {
                while j + MULTI_ACT_ROWS <= j1 {
                    let a: [&[u8]; MULTI_ACT_ROWS] = std::array::from_fn(|k| act(j + k));
                    for (i, wr) in tile.chunks_exact(c.w_row).enumerate() {
                        let v = multi(wr, a);
                        for (k, v) in v.iter().enumerate() {
                            out[(j + k) * out_stride + r0 + i] = *v;
                        }
                    }
                    j += MULTI_ACT_ROWS;
                }
            }
            for j in j..j1 {
                let a = act(j);
                let o = &mut out[j * out_stride + r0..j * out_stride + r1];
                for (o, wr) in o.iter_mut().zip(tile.chunks_exact(c.w_row)) {
                    *o = (c.kernel)(wr, a);
                }
            }
        }
    }
    Ok(())
}

/// `out[k] = dot(weight row row_ids[k], act)`: only the listed rows (the active neurons of a
/// sparse FFN). `out.len() == row_ids.len()`; every id must be a row of the matrix.
pub fn matvec_gather(
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    row_ids: &[u32],
    act: &[u8],
    out: &mut [f32],
) -> Result<()> {
    let c = check(ty, n_cols, weights)?;
    if act.len() != c.a_row || out.len() != row_ids.len() {
        crate::bail!(
            InvalidArgument,
            "matvec_gather {ty}: activation {} bytes (want {}), output {} for {} ids",
            act.len(),
            c.a_row,
            out.len(),
            row_ids.len()
        );
    }
    check_ids(row_ids, c.n_rows)?;
    let rows = RowSet::Gathered {
        weights,
        ids: row_ids,
    };
    dot_rows(&c, rows, act, out);
    Ok(())
}

/// How far ahead a gathered row walk prefetches, in bytes of rows. The rows of a sparse step
/// are scattered, so the hardware prefetcher (which follows sequential streams) does not fetch
/// them; without this, gathered rows cost a memory latency each whenever the weights do not
/// fit in cache (with no prefetch, 60% of the 8B shape's rows took 2.2× the time of all
/// rows). Measured from memory:
/// - on an AVX-512 EPYC (`bench/results/2026-11-23-s6-path-costs/`), Q5_0 rows of 396 and
///   2,816 bytes: 8–16 rows ahead was best for the short rows, 1–2 for the long ones, and 2
///   ahead of a short row (800 bytes) cost 1.3–1.5× the time;
/// - on a Zen 5 EPYC (`bench/results/2026-12-07-s8-decode-check.md`), `ghost tune`'s
///   gathered-row curve: the 8B shape's Q4_K rows of 2,304 bytes at 60% kept took 1.00–1.05
///   of all rows' time one row (4 KB) ahead and 0.77–0.85 three to six rows (7–14 KB) ahead
///   (decode `target:0.5:act` 1.07–1.09× → 1.13–1.16×); SmolLM2's 396-byte rows were alike
///   from 4 to 9 KB ahead and worse at 2 and 18 KB.
const GATHER_PREFETCH_BYTES: usize = 8192;

/// Row `ids[k]` of `weights` (rows of `w_row` bytes; bounds-checked), after asking the CPU
/// to start loading row `ids[k + ahead]`: one step of a gathered walk.
#[inline(always)]
pub(crate) fn gathered_row<'w>(
    weights: &'w [u8],
    w_row: usize,
    ids: &[u32],
    k: usize,
    ahead: usize,
) -> &'w [u8] {
    if let Some(&next) = ids.get(k + ahead) {
        prefetch_row(weights, next as usize, w_row);
    }
    let r = ids[k] as usize;
    &weights[r * w_row..(r + 1) * w_row]
}

/// Rows ahead a gathered walk over rows of `w_row` bytes prefetches (at least one).
#[inline]
pub(crate) fn gather_prefetch_rows(w_row: usize) -> usize {
    (GATHER_PREFETCH_BYTES / w_row.max(1)).clamp(1, 16)
}

/// Asks the CPU to start loading row `r` (of `w_row` bytes) of `weights` into cache.
#[inline(always)]
fn prefetch_row(weights: &[u8], r: usize, w_row: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let Some(row) = weights.get(r * w_row..(r + 1) * w_row) else {
            return;
        };
        for line in row.chunks(64) {
            // SAFETY: `_mm_prefetch` needs only SSE (baseline on x86_64) and never faults or
            // changes memory; the pointer is inside `weights`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (weights, r, w_row);
}

fn check_ids(row_ids: &[u32], n_rows: usize) -> Result<()> {
    if let Some(&bad) = row_ids.iter().find(|&&r| r as usize >= n_rows) {
        crate::bail!(
            InvalidArgument,
            "row id {bad} outside a matrix of {n_rows} rows"
        );
    }
    Ok(())
}

/// `out += Σ_k coefs[k] * dequantize(weight row row_ids[k])` (the sparse down projection over
/// a neuron-major copy of `ffn_down`). `out.len() == n_cols`, `coefs.len() == row_ids.len()`.
///
/// F32, F16 and Q8_0 rows (and with AVX2 also Q5_0, Q4_K and Q6_K rows) are accumulated
/// directly; other types are dequantized one row at a time into a scratch buffer.
pub fn axpy_rows(
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    row_ids: &[u32],
    coefs: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let Some(w_row) = row_len(ty, n_cols) else {
        crate::bail!(
            InvalidArgument,
            "{n_cols} columns is not a whole number of {ty} blocks"
        );
    };
    if !ty.is_supported_for_compute() {
        crate::bail!(Unsupported, "axpy_rows over {ty} weights");
    }
    if w_row == 0 || weights.len() % w_row != 0 {
        crate::bail!(
            InvalidArgument,
            "{ty} weights are not whole rows of {n_cols} columns"
        );
    }
    if coefs.len() != row_ids.len() || out.len() != n_cols {
        crate::bail!(
            InvalidArgument,
            "axpy_rows {ty}: {} coefficients for {} ids, output {} for {n_cols} columns",
            coefs.len(),
            row_ids.len(),
            out.len()
        );
    }
    check_ids(row_ids, weights.len() / w_row)?;
    let axpy = crate::quant::axpy::axpy_kernel(ty);
    let mut scratch = Vec::new();
    let ahead_rows = gather_prefetch_rows(w_row);
    for (i, &coef) in coefs.iter().enumerate() {
        let row = gathered_row(weights, w_row, row_ids, i, ahead_rows);
        match axpy {
            Some(f) => f(coef, row, out),
            None => {
                scratch.resize(n_cols, 0f32);
                dequantize_row(ty, row, &mut scratch)?;
                for (o, v) in out.iter_mut().zip(&scratch) {
                    *o += coef * v;
                }
            }
        }
    }
    Ok(())
}

/// Row bytes of type `ty` as `usize` (re-exported helper for callers sizing buffers).
pub fn row_bytes(ty: GgmlType, n: usize) -> Option<usize> {
    row_len(ty, n)
}
