//! Dot-product dispatch: picks, once per process, the instruction set the kernels use, and
//! maps a weight type to its row-dot function.

use std::sync::OnceLock;

use crate::quant::activation::vec_dot_type;
use crate::quant::blocks::*;
use crate::quant::dot_scalar as scalar;
use crate::quant::types::GgmlType;

/// The instruction set the quant kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (the reference kernels).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
        })
    }
}

/// Environment variable that forces the scalar kernels when set to `1` (read once).
pub const FORCE_SCALAR_ENV: &str = "GHOST_FORCE_SCALAR";

/// The instruction set chosen for this process: the best one the CPU supports, unless
/// `GHOST_FORCE_SCALAR=1`. Decided on first use and cached.
pub fn active_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var(FORCE_SCALAR_ENV).is_ok_and(|v| v == "1") {
            return Isa::Scalar;
        }
        best_supported_isa()
    })
}

/// The best instruction set this CPU supports (ignoring `GHOST_FORCE_SCALAR`).
pub fn best_supported_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// A row dot product over raw bytes: `w` holds whole weight blocks, `a` the matching
/// activation blocks. Kernels only read the blocks both slices hold in full, so a short
/// slice gives a partial sum, never an out-of-bounds read.
pub(crate) type RowDot = fn(w: &[u8], a: &[u8]) -> f32;

macro_rules! blockwise {
    ($f:path, $w:ty, $a:ty) => {
        |w: &[u8], a: &[u8]| $f(cast_blocks_prefix::<$w>(w), cast_blocks_prefix::<$a>(a))
    };
}

/// The scalar reference kernel for weights of type `ty`, or `None` if unsupported.
pub(crate) fn scalar_row_dot(ty: GgmlType) -> Option<RowDot> {
    use GgmlType::*;
    Some(match ty {
        F32 => scalar::dot_f32,
        F16 => scalar::dot_f16,
        BF16 => scalar::dot_bf16,
        Q4_0 => blockwise!(scalar::dot_q4_0, BlockQ4_0, BlockQ8_0),
        Q4_1 => blockwise!(scalar::dot_q4_1, BlockQ4_1, BlockQ8_1),
        Q5_0 => blockwise!(scalar::dot_q5_0, BlockQ5_0, BlockQ8_0),
        Q5_1 => blockwise!(scalar::dot_q5_1, BlockQ5_1, BlockQ8_1),
        Q8_0 => blockwise!(scalar::dot_q8_0, BlockQ8_0, BlockQ8_0),
        Q2_K => blockwise!(scalar::dot_q2_k, BlockQ2K, BlockQ8K),
        Q3_K => blockwise!(scalar::dot_q3_k, BlockQ3K, BlockQ8K),
        Q4_K => blockwise!(scalar::dot_q4_k, BlockQ4K, BlockQ8K),
        Q5_K => blockwise!(scalar::dot_q5_k, BlockQ5K, BlockQ8K),
        Q6_K => blockwise!(scalar::dot_q6_k, BlockQ6K, BlockQ8K),
        Q8_K => blockwise!(scalar::dot_q8_k, BlockQ8K, BlockQ8K),
        _ => return None,
    })
}

/// The kernel for `ty` under `isa` (falling back to scalar where no SIMD kernel exists).
pub(crate) fn row_dot_for(ty: GgmlType, isa: Isa) -> Option<RowDot> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && best_supported_isa() == Isa::Avx2 {
        if let Some(f) = crate::quant::dot_avx2::row_dot(ty) {
            return Some(f);
        }
    }
    let _ = isa;
    scalar_row_dot(ty)
}

/// Activation rows per call of a multi-row kernel.
pub(crate) const MULTI_ACT_ROWS: usize = 4;

/// One weight row against [`MULTI_ACT_ROWS`] activation rows, bit-identical to that many
/// [`RowDot`] calls.
pub(crate) type RowDotMulti = fn(w: &[u8], a: [&[u8]; MULTI_ACT_ROWS]) -> [f32; MULTI_ACT_ROWS];

/// The multi-row kernel for `ty` under `isa`, where one exists.
pub(crate) fn row_dot_multi_for(ty: GgmlType, isa: Isa) -> Option<RowDotMulti> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && best_supported_isa() == Isa::Avx2 {
        const _: () = assert!(crate::quant::dot_avx2::ACT_ROWS == MULTI_ACT_ROWS);
        return crate::quant::dot_avx2::row_dot_multi(ty);
    }
    let _ = (ty, isa);
    None
}

/// What a prepared-activation kernel precomputes for one activation block: 96 bytes whose
/// layout belongs to the kernel that wrote them (offset products, offset sums, the block
/// scale as broadcast f32, reordered quants). Aligned so kernels can load each 32-byte third
/// as one vector.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreparedBlock(pub [u8; 96]);

impl PreparedBlock {
    pub(crate) const ZERO: PreparedBlock = PreparedBlock([0; 96]);
}

/// A row dot product whose activations were prepared once per activation row (see
/// [`prepared_row_dot_for`]); `pre` holds one entry per activation block. Bit-identical to the
/// [`RowDot`] of the same type.
pub(crate) type RowDotPrepared = fn(w: &[u8], a: &[u8], pre: &[PreparedBlock]) -> f32;

/// [`RowDotPrepared`] over `out.len()` consecutive weight rows of `w_row` bytes each (`w`
/// holds them all): one call per matrix slice instead of one per row; the same values.
pub(crate) type RowsDotPrepared =
    fn(w: &[u8], w_row: usize, a: &[u8], pre: &[PreparedBlock], out: &mut [f32]);

/// [`RowDotPrepared`] over the weight rows `ids` of the matrix `w` (rows of `w_row` bytes):
/// `out[k] = dot(row ids[k], a)`, one call per gathered list (the rows of a sparse FFN's
/// active neurons), prefetching a few rows ahead; the same values. Every id must be a row of
/// `w` (checked by the caller; a bad id panics on a slice bound, never reads out of bounds).
pub(crate) type RowsGatherPrepared =
    fn(w: &[u8], w_row: usize, ids: &[u32], a: &[u8], pre: &[PreparedBlock], out: &mut [f32]);

/// Writes the prepared data of the activation blocks in `a` into `out`, one entry per block
/// (as many blocks as both slices hold).
pub(crate) type PrepareActs = fn(a: &[u8], out: &mut [PreparedBlock]);

/// A prepare function and the kernels that read its result.
#[derive(Clone, Copy)]
pub(crate) struct PreparedKernels {
    pub prepare: PrepareActs,
    pub row: RowDotPrepared,
    /// Consecutive rows in one call, where the kernel set has it.
    pub rows: Option<RowsDotPrepared>,
    /// Gathered rows in one call, where the kernel set has it.
    pub rows_gather: Option<RowsGatherPrepared>,
}

/// Environment variable that keeps the AVX-512 VNNI decode kernels off when set to `1`
/// (read once; for comparisons with the AVX2 kernels, which give the same bits).
pub const NO_VNNI_ENV: &str = "GHOST_NO_VNNI";

/// Whether the AVX-512 VNNI decode kernels run in this process: the CPU has them and
/// `GHOST_NO_VNNI=1` is not set (on top of [`active_isa`] being AVX2).
pub(crate) fn vnni_active() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if !std::env::var(NO_VNNI_ENV).is_ok_and(|v| v == "1") {
            return crate::quant::dot_vnni::cpu_supported();
        }
        false
    })
}

/// For weight types whose kernel spends work on the activations alone (Q4_0, Q5_0, and
/// Q8_0 with VNNI), the function that does that work once per activation row and the kernels
/// that use its result. The drivers use them when one activation row meets many weight rows.
pub(crate) fn prepared_row_dot_for(ty: GgmlType, isa: Isa) -> Option<PreparedKernels> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && best_supported_isa() == Isa::Avx2 {
        if vnni_active() {
            if let Some(k) = crate::quant::dot_vnni::prepared_kernels(ty) {
                return Some(k);
            }
        }
        return crate::quant::dot_avx2::prepared_row_dot(ty);
    }
    let _ = (ty, isa);
    None
}

/// The kernel for `ty` under [`active_isa`].
pub(crate) fn row_dot(ty: GgmlType) -> Option<RowDot> {
    row_dot_for(ty, active_isa())
}

/// Byte length of a row of `n` values of `ty`, if `n` is whole blocks and fits in `usize`.
pub(crate) fn row_len(ty: GgmlType, n: usize) -> Option<usize> {
    ty.row_bytes(n as u64).and_then(|b| usize::try_from(b).ok())
}

/// Dot product of one weight row (`n` weights of type `ty`) with activations quantized as
/// `vec_dot_type(ty)` (see [`quantize_activations`](crate::quant::quantize_activations)).
///
/// # Panics
/// If `ty` has no kernel (`!ty.is_supported_for_compute()`), `n` is not a whole number of
/// blocks, or `w_row` / `act` are not exactly one row long. These are caller bugs: the model
/// loader validates types and shapes; the drivers ([`matvec`](crate::quant::matvec), ...)
/// check lengths and return errors instead.
pub fn vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    let f = row_dot(ty).unwrap_or_else(|| panic!("vec_dot: no kernel for {ty}"));
    let vdt = vec_dot_type(ty);
    assert_eq!(
        Some(w_row.len()),
        row_len(ty, n),
        "vec_dot {ty}: weight row length"
    );
    assert_eq!(
        Some(act.len()),
        row_len(vdt, n),
        "vec_dot {ty}: activation length"
    );
    f(w_row, act)
}

/// [`vec_dot`] that returns an error instead of panicking when `ty` has no kernel or a length
/// is wrong.
pub fn try_vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> crate::Result<f32> {
    let Some(f) = row_dot(ty) else {
        crate::bail!(Unsupported, "no dot-product kernel for {ty} weights");
    };
    let vdt = vec_dot_type(ty);
    if Some(w_row.len()) != row_len(ty, n) || Some(act.len()) != row_len(vdt, n) {
        crate::bail!(
            InvalidArgument,
            "vec_dot {ty} over {n} weights: row of {} bytes, activations of {} bytes",
            w_row.len(),
            act.len()
        );
    }
    Ok(f(w_row, act))
}

/// [`vec_dot`] with the kernels of `isa` instead of [`active_isa`] (for tests and
/// benchmarks). An `isa` this CPU lacks, or a type without a SIMD kernel, runs the scalar
/// reference. Same preconditions as [`vec_dot`].
pub fn vec_dot_with_isa(isa: Isa, ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    let f = row_dot_for(ty, isa).unwrap_or_else(|| panic!("vec_dot: no kernel for {ty}"));
    assert_eq!(
        Some(w_row.len()),
        row_len(ty, n),
        "vec_dot {ty}: weight row length"
    );
    assert_eq!(
        Some(act.len()),
        row_len(vec_dot_type(ty), n),
        "vec_dot {ty}: activation length"
    );
    f(w_row, act)
}

/// Whether a SIMD kernel for `ty` runs under [`active_isa`] (otherwise the scalar one does).
pub fn has_simd_kernel(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    if active_isa() == Isa::Avx2 {
        return crate::quant::dot_avx2::row_dot(ty).is_some();
    }
    let _ = ty;
    false
}
