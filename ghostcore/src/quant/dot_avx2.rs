//! AVX2 + FMA + F16C row-dot kernels (x86-64).
//!
//! Each kernel runs its whole row loop inside one `#[target_feature]` function. The integer
//! part of every block is exact for *any* input bytes (no reliance on activations avoiding
//! -128): unsigned quants go through `maddubs` (u8 x i8, pair sums far below i16
//! saturation), offsets such as "q - 8" are subtracted as `offset * Σy` instead of being
//! folded into a signed operand. Only the float accumulation order differs from the scalar
//! reference.
//!
//! Every `unsafe fn` here (including the `pub(crate)` decoding helpers that `axpy` reuses)
//! may only run on a CPU with avx2, fma and f16c.
//!
//! The functions in [`row_dot`]'s table are safe wrappers: they are only handed out by
//! [`crate::quant::kernels::row_dot_for`] after `is_x86_feature_detected!` confirmed
//! avx2, fma and f16c.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::blocks::*;
use crate::quant::kernels::{
    PrepareActs, PreparedBlock, PreparedKernels, RowDot, RowDotMulti, RowDotPrepared,
    RowsGatherPrepared,
};
use crate::quant::types::GgmlType;

/// The AVX2 kernel for weights of type `ty`, if there is one.
///
/// Callers must have checked that the CPU supports avx2, fma and f16c.
pub(crate) fn row_dot(ty: GgmlType) -> Option<RowDot> {
    use GgmlType::*;
    macro_rules! wrap {
        ($f:path, $w:ty, $a:ty) => {{
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: this wrapper is only reachable through `row_dot`, whose caller
                // verified avx2/fma/f16c support; the kernel reads only whole blocks of the
                // slices it is given.
                unsafe { $f(cast_blocks_prefix::<$w>(w), cast_blocks_prefix::<$a>(a)) }
            }
            safe as RowDot
        }};
    }
    Some(match ty {
        F32 => {
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: as in `wrap!`; reads stay inside both slices.
                unsafe { dot_f32(w, a) }
            }
            safe as RowDot
        }
        F16 => {
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: as in `wrap!`; reads stay inside both slices.
                unsafe { dot_f16(w, a) }
            }
            safe as RowDot
        }
        Q4_0 => wrap!(dot32::<Q4_0Kernel>, BlockQ4_0, BlockQ8_0),
        Q4_1 => wrap!(dot32::<Q4_1Kernel>, BlockQ4_1, BlockQ8_1),
        Q5_0 => wrap!(dot32::<Q5_0Kernel>, BlockQ5_0, BlockQ8_0),
        Q5_1 => wrap!(dot32::<Q5_1Kernel>, BlockQ5_1, BlockQ8_1),
        Q8_0 => wrap!(dot32::<Q8_0Kernel>, BlockQ8_0, BlockQ8_0),
        Q2_K => wrap!(dot_q2_k, BlockQ2K, BlockQ8K),
        Q3_K => wrap!(dot_q3_k, BlockQ3K, BlockQ8K),
        Q4_K => wrap!(dot_q4_k, BlockQ4K, BlockQ8K),
        Q5_K => wrap!(dot_q5_k, BlockQ5K, BlockQ8K),
        Q6_K => wrap!(dot_q6_k, BlockQ6K, BlockQ8K),
        _ => return None,
    })
}

#[inline(always)]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    hsum_ps128(s)
}

#[inline(always)]
unsafe fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Two little-endian f16 values as f32 through F16C (exact, like `f16_le`, without
/// `half`'s per-call feature detection).
///
/// Both halves travel in one 32-bit `movd`, which defines the whole register: converting a
/// lone u16 lets LLVM use `vpinsrw` into an arbitrary register, which made each block's
/// scale wait on the accumulator chain held in that register.
#[inline(always)]
pub(crate) unsafe fn h2f_pair(lo: [u8; 2], hi: [u8; 2]) -> (f32, f32) {
    let bits = u32::from_le_bytes([lo[0], lo[1], hi[0], hi[1]]);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The product of two f16 values (same value as `f16_le(a) * f16_le(b)`).
#[inline(always)]
unsafe fn h2f_prod(a: [u8; 2], b: [u8; 2]) -> f32 {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(
        u32::from_le_bytes([a[0], a[1], b[0], b[1]]) as i32,
    ));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// The scale products `x0 * y0` and `x1 * y1` of two block pairs (f16 inputs), broadcast:
/// one conversion for four values. Same values as two [`h2f_prod`] calls.
#[inline(always)]
unsafe fn h2f_prod_x2(x0: [u8; 2], y0: [u8; 2], x1: [u8; 2], y1: [u8; 2]) -> (__m256, __m256) {
    let bits = u64::from_le_bytes([x0[0], x0[1], y0[0], y0[1], x1[0], x1[1], y1[0], y1[1]]);
    let v = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
    let p = _mm_mul_ps(v, _mm_movehdup_ps(v));
    (
        _mm256_broadcastss_ps(p),
        _mm256_broadcastss_ps(_mm_movehl_ps(p, p)),
    )
}

/// One f16 value as f32.
#[inline(always)]
pub(crate) unsafe fn h2f(b: [u8; 2]) -> f32 {
    h2f_pair(b, [0, 0]).0
}

/// Load 32 bytes from a 32-byte array.
#[inline(always)]
unsafe fn load32(p: &[u8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr().cast())
}

#[inline(always)]
unsafe fn load32_i8(p: &[i8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr().cast())
}

/// `Σ_pairs` of u8 x i8 products as 16 x i16 (`q` must be 0..=127 for exactness, it is 0..=63).
#[inline(always)]
unsafe fn maddubs(q: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(q, y)
}

/// The 32 nibbles of 16 bytes as bytes: low nibbles first, then high nibbles.
#[inline(always)]
pub(crate) unsafe fn nibbles_32(qs: &[u8; 16]) -> __m256i {
    let t = _mm_loadu_si128(qs.as_ptr().cast());
    let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Byte j (0..32) is 0x10 where bit j of `qh` is set, else 0.
#[inline(always)]
pub(crate) unsafe fn fifth_bits_32(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bytes = _mm256_shuffle_epi8(v, pick);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Eight f16 values at `p` as f32.
#[inline(always)]
unsafe fn load(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// Bits `2k, 2k+1` of each byte of `qh`, moved to bits 4 and 5.
#[inline(always)]
unsafe fn q6_high_bits(qh: __m256i, k: i32, three: __m256i) -> __m256i {
    let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k));
    _mm256_slli_epi16(_mm256_and_si256(shifted, three), 4)
}

/// The unsigned 3-bit quants (0..7: the signed weight plus 4) of 32-weight group `k` (0..4) of
/// half `half` (0 or 1) of a Q3_K block, one byte a weight, from that half's `qs` bytes `q`
/// and the block's `hmask` `hm`: the low 2 bits are bits `2k..2k+2` of `q`, the third is bit
/// `4·half + k` of `hm` (the weight is the low bits when it is set, the low bits − 4 when not).
#[inline(always)]
pub(crate) unsafe fn q3_group_quants(q: __m256i, hm: __m256i, half: usize, k: usize) -> __m256i {
    let ql = _mm256_and_si256(
        _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)),
        _mm256_set1_epi8(3),
    );
    let bit = _mm_cvtsi32_si128((4 * half + k) as i32);
    let h = _mm256_and_si256(_mm256_srl_epi16(hm, bit), _mm256_set1_epi8(1));
    _mm256_or_si256(ql, _mm256_slli_epi16(h, 2))
}

/// The unsigned 6-bit quants (0..63) of the four 32-weight groups of half `half` (0 or 1) of
/// a Q6_K block, one byte a weight: low nibbles from `ql`, bits 4-5 from `qh`.
#[inline(always)]
pub(crate) unsafe fn q6_half_quants(b: &BlockQ6K, half: usize) -> [__m256i; 4] {
    let low4 = _mm256_set1_epi8(0x0f);
    let three = _mm256_set1_epi8(3);
    let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half).cast());
    let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half + 32).cast());
    let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * half).cast());
    [
        _mm256_or_si256(_mm256_and_si256(ql0, low4), q6_high_bits(qh, 0, three)),
        _mm256_or_si256(_mm256_and_si256(ql1, low4), q6_high_bits(qh, 1, three)),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
            q6_high_bits(qh, 2, three),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
            q6_high_bits(qh, 3, three),
        ),
    ]
}

/// Sum of 16 x i16 as 8 x i32.
#[inline(always)]
unsafe fn widen_sum(p16: __m256i) -> __m256i {
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / 4;
    let (pw, pa) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pw.add(i + 8 * k));
            let y = _mm256_loadu_ps(pa.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pw.add(i)),
            _mm256_loadu_ps(pa.add(i)),
            acc[0],
        );
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += pw.add(i).read_unaligned() * pa.add(i).read_unaligned();
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / 2;
    let (pw, pa) = (w.as_ptr().cast::<u16>(), a.as_ptr().cast::<u16>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load(pw.add(i + 8 * k)), load(pa.add(i + 8 * k)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(pw.add(i)), load(pa.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        let x = half::f16::from_bits(pw.add(i).read_unaligned()).to_f32();
        let y = half::f16::from_bits(pa.add(i).read_unaligned()).to_f32();
        sum += x * y;
        i += 1;
    }
    sum
}

/// A 32-weight block format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as seen by the AVX2 kernels:
/// decode a weight block once, then take its exact integer dot product with any number of
/// activation blocks.
trait Q32Kernel {
    type W;
    type A;
    /// Whether blocks contribute a `m * s` offset term (Q4_1, Q5_1).
    const HAS_OFFSET: bool;
    /// The decoded weight quants (kept in registers).
    type Decoded: Copy;
    unsafe fn decode(x: &Self::W) -> Self::Decoded;
    /// The part of an activation block's integer work that does not depend on the weights
    /// (loaded or widened quants, offset sums), shared by every weight row it meets.
    type Prep: Copy;
    unsafe fn prep(y: &Self::A) -> Self::Prep;
    /// `Σ q_w q_a` of one block pair as 8 partial i32 sums, from the prepared activations.
    unsafe fn isum_prep(q: Self::Decoded, p: Self::Prep) -> __m256i;
    /// The f16 scale of a weight block and of an activation block.
    fn w_scale(x: &Self::W) -> [u8; 2];
    fn a_scale(y: &Self::A) -> [u8; 2];
    /// The offset term `m_w * s_a` (0 when `!HAS_OFFSET`).
    unsafe fn offset(x: &Self::W, y: &Self::A) -> f32;
}

struct Q4_0Kernel;
struct Q4_1Kernel;
struct Q5_0Kernel;
struct Q5_1Kernel;
struct Q8_0Kernel;

impl Q32Kernel for Q8_0Kernel {
    type W = BlockQ8_0;
    type A = BlockQ8_0;
    const HAS_OFFSET: bool = false;
    type Decoded = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn decode(x: &BlockQ8_0) -> Self::Decoded {
        // Widened to i16 so every i8 x i8 product (including -128 * -128) is exact.
        let xv = load32_i8(&x.qs);
        (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(xv)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xv, 1)),
        )
    }
    type Prep = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn prep(y: &BlockQ8_0) -> Self::Prep {
        let yv = load32_i8(&y.qs);
        (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(yv)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(yv, 1)),
        )
    }
    #[inline(always)]
    unsafe fn isum_prep(q: Self::Decoded, p: Self::Prep) -> __m256i {
        // Lane k sums the products of bytes 2k, 2k+1, 16+2k and 17+2k.
        _mm256_add_epi32(_mm256_madd_epi16(q.0, p.0), _mm256_madd_epi16(q.1, p.1))
    }
    #[inline(always)]
    fn w_scale(x: &BlockQ8_0) -> [u8; 2] {
        x.d
    }
    #[inline(always)]
    fn a_scale(y: &BlockQ8_0) -> [u8; 2] {
        y.d
    }
    #[inline(always)]
    unsafe fn offset(_: &BlockQ8_0, _: &BlockQ8_0) -> f32 {
        0.0
    }
}

impl Q32Kernel for Q4_0Kernel {
    type W = BlockQ4_0;
    type A = BlockQ8_0;
    const HAS_OFFSET: bool = false;
    type Decoded = __m256i;
    #[inline(always)]
    unsafe fn decode(x: &BlockQ4_0) -> __m256i {
        nibbles_32(&x.qs)
    }
    type Prep = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn prep(y: &BlockQ8_0) -> Self::Prep {
        let yv = load32_i8(&y.qs);
        (yv, maddubs(_mm256_set1_epi8(8), yv))
    }
    #[inline(always)]
    unsafe fn isum_prep(q: __m256i, p: Self::Prep) -> __m256i {
        // Σ (q - 8) y = Σ q y - Σ 8 y, per pair in i16 (|.| <= 4096).
        widen_sum(_mm256_sub_epi16(maddubs(q, p.0), p.1))
    }
    #[inline(always)]
    fn w_scale(x: &BlockQ4_0) -> [u8; 2] {
        x.d
    }
    #[inline(always)]
    fn a_scale(y: &BlockQ8_0) -> [u8; 2] {
        y.d
    }
    #[inline(always)]
    unsafe fn offset(_: &BlockQ4_0, _: &BlockQ8_0) -> f32 {
        0.0
    }
}

impl Q32Kernel for Q4_1Kernel {
    type W = BlockQ4_1;
    type A = BlockQ8_1;
    const HAS_OFFSET: bool = true;
    type Decoded = __m256i;
    #[inline(always)]
    unsafe fn decode(x: &BlockQ4_1) -> __m256i {
        nibbles_32(&x.qs)
    }
    type Prep = __m256i;
    #[inline(always)]
    unsafe fn prep(y: &BlockQ8_1) -> __m256i {
        load32_i8(&y.qs)
    }
    #[inline(always)]
    unsafe fn isum_prep(q: __m256i, yv: __m256i) -> __m256i {
        widen_sum(maddubs(q, yv))
    }
    #[inline(always)]
    fn w_scale(x: &BlockQ4_1) -> [u8; 2] {
        x.d
    }
    #[inline(always)]
    fn a_scale(y: &BlockQ8_1) -> [u8; 2] {
        y.d
    }
    #[inline(always)]
    unsafe fn offset(x: &BlockQ4_1, y: &BlockQ8_1) -> f32 {
        h2f_prod(x.m, y.s)
    }
}

impl Q32Kernel for Q5_0Kernel {
    type W = BlockQ5_0;
    type A = BlockQ8_0;
    const HAS_OFFSET: bool = false;
    type Decoded = __m256i;
    #[inline(always)]
    unsafe fn decode(x: &BlockQ5_0) -> __m256i {
        _mm256_or_si256(nibbles_32(&x.qs), fifth_bits_32(x.qh()))
    }
    type Prep = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn prep(y: &BlockQ8_0) -> Self::Prep {
        let yv = load32_i8(&y.qs);
        (yv, maddubs(_mm256_set1_epi8(16), yv))
    }
    #[inline(always)]
    unsafe fn isum_prep(q: __m256i, p: Self::Prep) -> __m256i {
        // Σ (q - 16) y = Σ q y - Σ 16 y, per pair in i16 (|.| <= 8192).
        widen_sum(_mm256_sub_epi16(maddubs(q, p.0), p.1))
    }
    #[inline(always)]
    fn w_scale(x: &BlockQ5_0) -> [u8; 2] {
        x.d
    }
    #[inline(always)]
    fn a_scale(y: &BlockQ8_0) -> [u8; 2] {
        y.d
    }
    #[inline(always)]
    unsafe fn offset(_: &BlockQ5_0, _: &BlockQ8_0) -> f32 {
        0.0
    }
}

impl Q32Kernel for Q5_1Kernel {
    type W = BlockQ5_1;
    type A = BlockQ8_1;
    const HAS_OFFSET: bool = true;
    type Decoded = __m256i;
    #[inline(always)]
    unsafe fn decode(x: &BlockQ5_1) -> __m256i {
        _mm256_or_si256(nibbles_32(&x.qs), fifth_bits_32(x.qh()))
    }
    type Prep = __m256i;
    #[inline(always)]
    unsafe fn prep(y: &BlockQ8_1) -> __m256i {
        load32_i8(&y.qs)
    }
    #[inline(always)]
    unsafe fn isum_prep(q: __m256i, yv: __m256i) -> __m256i {
        widen_sum(maddubs(q, yv))
    }
    #[inline(always)]
    fn w_scale(x: &BlockQ5_1) -> [u8; 2] {
        x.d
    }
    #[inline(always)]
    fn a_scale(y: &BlockQ8_1) -> [u8; 2] {
        y.d
    }
    #[inline(always)]
    unsafe fn offset(x: &BlockQ5_1, y: &BlockQ8_1) -> f32 {
        h2f_prod(x.m, y.s)
    }
}

/// Accumulators for one activation row: blocks alternate between two chains (even / odd
/// block index) so consecutive FMAs do not wait on each other.
#[derive(Clone, Copy)]
struct Acc2 {
    acc: [__m256; 2],
    off: [f32; 2],
}

impl Acc2 {
    #[inline(always)]
    unsafe fn new() -> Self {
        Acc2 {
            acc: [_mm256_setzero_ps(); 2],
            off: [0.0; 2],
        }
    }
    #[inline(always)]
    unsafe fn add<K: Q32Kernel, const CHAIN: usize>(&mut self, q: K::Decoded, x: &K::W, y: &K::A) {
        let d = _mm256_set1_ps(h2f_prod(K::w_scale(x), K::a_scale(y)));
        self.add_scaled::<K, CHAIN>(d, q, x, y);
    }
    /// [`Acc2::add`] with the broadcast scale product `d` already computed.
    #[inline(always)]
    unsafe fn add_scaled<K: Q32Kernel, const CHAIN: usize>(
        &mut self,
        d: __m256,
        q: K::Decoded,
        x: &K::W,
        y: &K::A,
    ) {
        self.add_prepped::<K, CHAIN>(d, q, K::prep(y), x, y);
    }
    /// [`Acc2::add_scaled`] with the activation block already prepared ([`Q32Kernel::prep`]).
    #[inline(always)]
    unsafe fn add_prepped<K: Q32Kernel, const CHAIN: usize>(
        &mut self,
        d: __m256,
        q: K::Decoded,
        p: K::Prep,
        x: &K::W,
        y: &K::A,
    ) {
        let isum = K::isum_prep(q, p);
        self.acc[CHAIN] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), self.acc[CHAIN]);
        if K::HAS_OFFSET {
            self.off[CHAIN] += K::offset(x, y);
        }
    }
    #[inline(always)]
    unsafe fn finish<K: Q32Kernel>(self) -> f32 {
        let v = hsum_ps(_mm256_add_ps(self.acc[0], self.acc[1]));
        if K::HAS_OFFSET {
            v + (self.off[0] + self.off[1])
        } else {
            v
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot32<K: Q32Kernel>(w: &[K::W], a: &[K::A]) -> f32 {
    let n = w.len().min(a.len());
    let (w, a) = (&w[..n], &a[..n]);
    let mut acc = Acc2::new();
    let mut i = 0;
    while i + 1 < n {
        let (x0, x1, y0, y1) = (&w[i], &w[i + 1], &a[i], &a[i + 1]);
        let (d0, d1) = h2f_prod_x2(
            K::w_scale(x0),
            K::a_scale(y0),
            K::w_scale(x1),
            K::a_scale(y1),
        );
        acc.add_scaled::<K, 0>(d0, K::decode(x0), x0, y0);
        acc.add_scaled::<K, 1>(d1, K::decode(x1), x1, y1);
        i += 2;
    }
    if i < n {
        acc.add::<K, 0>(K::decode(&w[i]), &w[i], &a[i]);
    }
    acc.finish::<K>()
}

/// Scales (low 128 bits) and mins (high 128 bits) of a Q4_K/Q5_K block, widened to i16.
///
/// Unpacks the twelve bytes with 32-bit masks: bytes 0..8 of the result are the 6-bit
/// scales, bytes 8..16 the 6-bit mins (same values as `unpack_scales_mins_k4`).
#[inline(always)]
unsafe fn k4_scales_mins(s: &[u8; 12]) -> __m256i {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let t0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let t1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let t2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc_lo = t0 & LOW6;
    let sc_hi = (t2 & LOW4) | (((t0 >> 6) & TOP2) << 4);
    let m_lo = t1 & LOW6;
    let m_hi = ((t2 >> 4) & LOW4) | (((t1 >> 6) & TOP2) << 4);
    let packed = _mm_set_epi32(m_hi as i32, m_lo as i32, sc_hi as i32, sc_lo as i32);
    _mm256_cvtepu8_epi16(packed)
}

/// Broadcast 16-bit lane `j` (0..8) of each 128-bit half of `v` to the whole half.
#[inline(always)]
unsafe fn broadcast_i16_lane(v: __m256i, j: usize) -> __m256i {
    let pick = (((2 * j + 1) << 8) | (2 * j)) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(pick))
}

/// `Σ_j mins[j] * (bsums[2j] + bsums[2j+1])` as 4 x i32 (sum them for the block total).
#[inline(always)]
unsafe fn k_mins_dot(mins16: __m128i, y: &BlockQ8K) -> __m128i {
    let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
    let pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    _mm_madd_epi16(mins16, pair)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    for (x, y) in w.iter().zip(a) {
        let yd = y.d();
        let (xd, xdmin) = h2f_pair(x.d, x.dmin);
        let d = yd * xd;
        let dmin = -yd * xdmin;
        let sm = k4_scales_mins(&x.scales);
        let prod_m = k_mins_dot(_mm256_extracti128_si256(sm, 1), y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m);

        let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            let ql = _mm256_and_si256(bits, low4);
            let qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
            let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
            let pl = _mm256_madd_epi16(broadcast_i16_lane(scales, 2 * c), maddubs(ql, yl));
            let ph = _mm256_madd_epi16(broadcast_i16_lane(scales, 2 * c + 1), maddubs(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    for (x, y) in w.iter().zip(a) {
        let yd = y.d();
        let (xd, xdmin) = h2f_pair(x.d, x.dmin);
        let d = yd * xd;
        let dmin = -yd * xdmin;
        let sm = k4_scales_mins(&x.scales);
        let prod_m = k_mins_dot(_mm256_extracti128_si256(sm, 1), y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m);

        let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        let hbits = load32(&x.qh);
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            // Bit 2c of qh[l] is the fifth bit of the low-nibble weight, bit 2c+1 of the high.
            let shift_l = _mm_cvtsi32_si128(2 * c as i32);
            let shift_h = _mm_cvtsi32_si128(2 * c as i32 + 1);
            let hl = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_l), one);
            let hh = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_h), one);
            let ql = _mm256_or_si256(_mm256_and_si256(bits, low4), _mm256_slli_epi16(hl, 4));
            let qh = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4),
                _mm256_slli_epi16(hh, 4),
            );
            let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
            let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
            let pl = _mm256_madd_epi16(broadcast_i16_lane(scales, 2 * c), maddubs(ql, yl));
            let ph = _mm256_madd_epi16(broadcast_i16_lane(scales, 2 * c + 1), maddubs(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m32 = _mm256_set1_epi8(32);
    for (x, y) in w.iter().zip(a) {
        let d = h2f(x.d) * y.d();
        let scales = q6_group_scales(&x.scales);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            // Unsigned 6-bit quants (0..63) of the four 32-weight groups of this half.
            let q = q6_half_quants(x, half);
            for (g, qg) in q.iter().enumerate() {
                let yv = _mm256_loadu_si256(y.qs.as_ptr().add(128 * half + 32 * g).cast());
                // Σ (q - 32) y = Σ q y - Σ 32 y, per pair in i16 (|.| <= 16384).
                let p = _mm256_sub_epi16(maddubs(*qg, yv), maddubs(m32, yv));
                let scale = broadcast_i16_lane(scales, 4 * half + g);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// The sixteen i8 scales of a Q6_K block arranged for [`broadcast_i16_lane`]: i16 lane `k`
/// (0..8) of the low half holds `scales[2k]`, of the high half `scales[2k + 1]`, so
/// `broadcast_i16_lane(v, k)` is the scale vector of the 32-weight group pair `k` (matching the
/// two halves of a 32-byte `maddubs` product).
#[inline(always)]
unsafe fn q6_group_scales(scales: &[i8; 16]) -> __m256i {
    let raw = _mm_loadu_si128(scales.as_ptr().cast());
    let even_odd = _mm_shuffle_epi8(
        raw,
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
    );
    // Low half: the even-index scales; high half: the odd-index ones.
    _mm256_cvtepi8_epi16(even_odd)
}

/// Scale vector for a pair of 16-weight groups: i16 lanes 0..8 = `lo`, lanes 8..16 = `hi`
/// (matching the two halves of a 32-byte `maddubs` product).
#[inline(always)]
unsafe fn group_pair_scale(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    let three = _mm256_set1_epi8(3);
    for (x, y) in w.iter().zip(a) {
        let yd = y.d();
        let (xd, xdmin) = h2f_pair(x.d, x.dmin);
        // Mins: Σ_g (scales[g] >> 4) * bsums[g], exact in i32.
        let sc_bytes = _mm_loadu_si128(x.scales.as_ptr().cast());
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(
            _mm_srli_epi16(sc_bytes, 4),
            _mm_set1_epi8(0x0f),
        ));
        let bsums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let msum = _mm256_madd_epi16(mins, bsums);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(-yd * xdmin), _mm256_cvtepi32_ps(msum), acc_m);

        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q = _mm256_loadu_si256(x.qs.as_ptr().add(32 * half).cast());
            for k in 0..4 {
                let qk =
                    _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)), three);
                let yv = _mm256_loadu_si256(y.qs.as_ptr().add(128 * half + 32 * k).cast());
                let g = 8 * half + 2 * k;
                let scale =
                    group_pair_scale((x.scales[g] & 0x0f) as i16, (x.scales[g + 1] & 0x0f) as i16);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, maddubs(qk, yv)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * xd), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(_mm256_add_ps(acc, acc_m))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let four = _mm256_set1_epi8(4);
    for (x, y) in w.iter().zip(a) {
        let scales = x.unpacked_scales();
        let hm = load32(&x.hmask);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q = _mm256_loadu_si256(x.qs.as_ptr().add(32 * half).cast());
            for k in 0..4 {
                // q3 = ql - 4 * (1 - h) = (ql | 4h) - 4; Σ q3 y = Σ (ql | 4h) y - Σ 4 y.
                let u = q3_group_quants(q, hm, half, k);
                let yv = _mm256_loadu_si256(y.qs.as_ptr().add(128 * half + 32 * k).cast());
                let p = _mm256_sub_epi16(maddubs(u, yv), maddubs(four, yv));
                let g = 8 * half + 2 * k;
                let scale = group_pair_scale(scales[g] as i16 - 32, scales[g + 1] as i16 - 32);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        let d = h2f(x.d) * y.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------------------------------
// One weight row against four activation rows (the matmul micro-kernel): each weight block
// is decoded once and reused for the four activation rows. For every activation row the
// float operations happen in the same order as in the single-row kernel above, so the
// results are bit-identical to four `row_dot` calls.

/// Number of activation rows the multi-row kernels take.
pub(crate) const ACT_ROWS: usize = 4;

/// The multi-row kernel for `ty`, if there is one. Callers must have checked CPU support
/// (avx2, fma, f16c).
pub(crate) fn row_dot_multi(ty: GgmlType) -> Option<RowDotMulti> {
    use GgmlType::*;
    macro_rules! wrap {
        ($f:path, $w:ty, $a:ty) => {{
            fn safe(w: &[u8], a: [&[u8]; ACT_ROWS]) -> [f32; ACT_ROWS] {
                let acts = a.map(cast_blocks_prefix::<$a>);
                // SAFETY: only reachable through `row_dot_multi`, whose caller verified
                // avx2/fma/f16c; the kernel reads only blocks present in every slice.
                unsafe { $f(cast_blocks_prefix::<$w>(w), acts) }
            }
            safe as RowDotMulti
        }};
    }
    Some(match ty {
        Q4_0 => wrap!(dot32_multi::<Q4_0Kernel>, BlockQ4_0, BlockQ8_0),
        Q4_1 => wrap!(dot32_multi::<Q4_1Kernel>, BlockQ4_1, BlockQ8_1),
        Q5_0 => wrap!(dot32_multi::<Q5_0Kernel>, BlockQ5_0, BlockQ8_0),
        Q5_1 => wrap!(dot32_multi::<Q5_1Kernel>, BlockQ5_1, BlockQ8_1),
        Q8_0 => wrap!(dot32_multi::<Q8_0Kernel>, BlockQ8_0, BlockQ8_0),
        Q4_K => wrap!(dot4_q4_k, BlockQ4K, BlockQ8K),
        Q5_K => wrap!(dot4_q5_k, BlockQ5K, BlockQ8K),
        Q6_K => wrap!(dot4_q6_k, BlockQ6K, BlockQ8K),
        _ => return None,
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot32_multi<K: Q32Kernel>(w: &[K::W], a: [&[K::A]; ACT_ROWS]) -> [f32; ACT_ROWS] {
    let nb = common_blocks(w, &a);
    let (w, a) = (&w[..nb], a.map(|r| &r[..nb]));
    let mut acc = [Acc2::new(); ACT_ROWS];
    let mut i = 0;
    while i + 1 < nb {
        let q0 = K::decode(&w[i]);
        let q1 = K::decode(&w[i + 1]);
        let (x0, x1) = (&w[i], &w[i + 1]);
        for j in 0..ACT_ROWS {
            let (y0, y1) = (&a[j][i], &a[j][i + 1]);
            let (d0, d1) = h2f_prod_x2(
                K::w_scale(x0),
                K::a_scale(y0),
                K::w_scale(x1),
                K::a_scale(y1),
            );
            acc[j].add_scaled::<K, 0>(d0, q0, x0, y0);
            acc[j].add_scaled::<K, 1>(d1, q1, x1, y1);
        }
        i += 2;
    }
    if i < nb {
        let q = K::decode(&w[i]);
        for j in 0..ACT_ROWS {
            acc[j].add::<K, 0>(q, &w[i], &a[j][i]);
        }
    }
    let mut out = [0f32; ACT_ROWS];
    for j in 0..ACT_ROWS {
        out[j] = acc[j].finish::<K>();
    }
    out
}

#[inline(always)]
fn common_blocks<W, A>(w: &[W], a: &[&[A]; ACT_ROWS]) -> usize {
    a.iter().fold(w.len(), |n, r| n.min(r.len()))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q4_k(w: &[BlockQ4K], a: [&[BlockQ8K]; ACT_ROWS]) -> [f32; ACT_ROWS] {
    let mut acc = [_mm256_setzero_ps(); ACT_ROWS];
    let mut acc_m = [_mm_setzero_ps(); ACT_ROWS];
    let low4 = _mm256_set1_epi8(0x0f);
    let nb = common_blocks(w, &a);
    let (w, a) = (&w[..nb], a.map(|r| &r[..nb]));
    for i in 0..nb {
        let x = &w[i];
        let (xd, xdmin) = h2f_pair(x.d, x.dmin);
        let sm = k4_scales_mins(&x.scales);
        let mins = _mm256_extracti128_si256(sm, 1);
        let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        for j in 0..ACT_ROWS {
            let y = &a[j][i];
            let dmin = -y.d() * xdmin;
            let prod_m = k_mins_dot(mins, y);
            acc_m[j] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m[j]);
        }
        // Chunk-major: decode one 64-weight chunk, use it for every activation row.
        let mut sumi = [_mm256_setzero_si256(); ACT_ROWS];
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            let ql = _mm256_and_si256(bits, low4);
            let qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            let sl = broadcast_i16_lane(scales, 2 * c);
            let sh = broadcast_i16_lane(scales, 2 * c + 1);
            for j in 0..ACT_ROWS {
                let y = &a[j][i];
                let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
                let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
                let pl = _mm256_madd_epi16(sl, maddubs(ql, yl));
                let ph = _mm256_madd_epi16(sh, maddubs(qh, yh));
                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(pl, ph));
            }
        }
        for j in 0..ACT_ROWS {
            let d = a[j][i].d() * xd;
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
        }
    }
    let mut out = [0f32; ACT_ROWS];
    for j in 0..ACT_ROWS {
        out[j] = hsum_ps(acc[j]) + hsum_ps128(acc_m[j]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q5_k(w: &[BlockQ5K], a: [&[BlockQ8K]; ACT_ROWS]) -> [f32; ACT_ROWS] {
    let mut acc = [_mm256_setzero_ps(); ACT_ROWS];
    let mut acc_m = [_mm_setzero_ps(); ACT_ROWS];
    let low4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    let nb = common_blocks(w, &a);
    let (w, a) = (&w[..nb], a.map(|r| &r[..nb]));
    for i in 0..nb {
        let x = &w[i];
        let (xd, xdmin) = h2f_pair(x.d, x.dmin);
        let sm = k4_scales_mins(&x.scales);
        let mins = _mm256_extracti128_si256(sm, 1);
        let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        for j in 0..ACT_ROWS {
            let y = &a[j][i];
            let dmin = -y.d() * xdmin;
            let prod_m = k_mins_dot(mins, y);
            acc_m[j] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m[j]);
        }
        let hbits = load32(&x.qh);
        let mut sumi = [_mm256_setzero_si256(); ACT_ROWS];
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            let shift_l = _mm_cvtsi32_si128(2 * c as i32);
            let shift_h = _mm_cvtsi32_si128(2 * c as i32 + 1);
            let hl = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_l), one);
            let hh = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_h), one);
            let ql = _mm256_or_si256(_mm256_and_si256(bits, low4), _mm256_slli_epi16(hl, 4));
            let qh = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4),
                _mm256_slli_epi16(hh, 4),
            );
            let sl = broadcast_i16_lane(scales, 2 * c);
            let sh = broadcast_i16_lane(scales, 2 * c + 1);
            for j in 0..ACT_ROWS {
                let y = &a[j][i];
                let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
                let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
                let pl = _mm256_madd_epi16(sl, maddubs(ql, yl));
                let ph = _mm256_madd_epi16(sh, maddubs(qh, yh));
                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(pl, ph));
            }
        }
        for j in 0..ACT_ROWS {
            let d = a[j][i].d() * xd;
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
        }
    }
    let mut out = [0f32; ACT_ROWS];
    for j in 0..ACT_ROWS {
        out[j] = hsum_ps(acc[j]) + hsum_ps128(acc_m[j]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q6_k(w: &[BlockQ6K], a: [&[BlockQ8K]; ACT_ROWS]) -> [f32; ACT_ROWS] {
    let mut acc = [_mm256_setzero_ps(); ACT_ROWS];
    let m32 = _mm256_set1_epi8(32);
    let nb = common_blocks(w, &a);
    let (w, a) = (&w[..nb], a.map(|r| &r[..nb]));
    for i in 0..nb {
        let x = &w[i];
        let xd = h2f(x.d);
        let scales = q6_group_scales(&x.scales);
        let mut sumi = [_mm256_setzero_si256(); ACT_ROWS];
        for half in 0..2 {
            let q = q6_half_quants(x, half);
            let scale: [__m256i; 4] =
                std::array::from_fn(|g| broadcast_i16_lane(scales, 4 * half + g));
            for j in 0..ACT_ROWS {
                let y = &a[j][i];
                for g in 0..4 {
                    let yv = _mm256_loadu_si256(y.qs.as_ptr().add(128 * half + 32 * g).cast());
                    let p = _mm256_sub_epi16(maddubs(q[g], yv), maddubs(m32, yv));
                    sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(scale[g], p));
                }
            }
        }
        for j in 0..ACT_ROWS {
            let d = xd * a[j][i].d();
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
        }
    }
    let mut out = [0f32; ACT_ROWS];
    for j in 0..ACT_ROWS {
        out[j] = hsum_ps(acc[j]);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Q4_0 / Q5_0 with prepared activations (decode matvec): the weight-independent product
// `maddubs(offset, y)` of each activation block (the `Σ offset * y` term of
// `Σ (q - offset) y`) is computed once per activation row instead of once per weight row,
// taking one of the three integer multiplies per block off the weight loop. The integer sums
// and the float operations are those of `dot32`, so the results are bit-identical.

/// A 32-weight kernel whose weight quants carry an offset (`q - OFFSET`) against Q8_0
/// activations.
trait OffsetKernel: Q32Kernel<A = BlockQ8_0, Prep = (__m256i, __m256i)> {
    const OFFSET: i8;
}

impl OffsetKernel for Q4_0Kernel {
    const OFFSET: i8 = 8;
}

impl OffsetKernel for Q5_0Kernel {
    const OFFSET: i8 = 16;
}

/// The prepare function and the prepared-activation kernel for `ty`, if it has them.
/// Callers must have checked CPU support (avx2, fma, f16c).
pub(crate) fn prepared_row_dot(ty: GgmlType) -> Option<PreparedKernels> {
    macro_rules! wrap {
        ($k:ty, $w:ty) => {{
            fn prepare(a: &[u8], out: &mut [PreparedBlock]) {
                // SAFETY: only reachable through `prepared_row_dot`, whose caller verified
                // avx2/fma/f16c; reads and writes stay inside both slices.
                unsafe { offset_products::<$k>(cast_blocks_prefix::<BlockQ8_0>(a), out) }
            }
            fn dot(w: &[u8], a: &[u8], pre: &[PreparedBlock]) -> f32 {
                // SAFETY: as above; the kernel reads only blocks present in all three slices.
                unsafe {
                    dot32_prepared::<$k>(
                        cast_blocks_prefix::<$w>(w),
                        cast_blocks_prefix::<BlockQ8_0>(a),
                        pre,
                    )
                }
            }
            fn rows_gather(
                w: &[u8],
                w_row: usize,
                ids: &[u32],
                a: &[u8],
                pre: &[PreparedBlock],
                out: &mut [f32],
            ) {
                let (w_row, a) = (w_row.max(1), cast_blocks_prefix::<BlockQ8_0>(a));
                let ahead_rows = crate::quant::drivers::gather_prefetch_rows(w_row);
                for (k, o) in out.iter_mut().enumerate().take(ids.len()) {
                    let row = crate::quant::drivers::gathered_row(w, w_row, ids, k, ahead_rows);
                    let row = cast_blocks_prefix::<$w>(row);
                    // SAFETY: as above; the kernel reads only blocks present in all three
                    // slices.
                    *o = unsafe { dot32_prepared::<$k>(row, a, pre) };
                }
            }
            PreparedKernels {
                prepare: prepare as PrepareActs,
                row: dot as RowDotPrepared,
                rows: None,
                rows_gather: Some(rows_gather as RowsGatherPrepared),
            }
        }};
    }
    match ty {
        GgmlType::Q4_0 => Some(wrap!(Q4_0Kernel, BlockQ4_0)),
        GgmlType::Q5_0 => Some(wrap!(Q5_0Kernel, BlockQ5_0)),
        _ => None,
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset_products<K: OffsetKernel>(a: &[BlockQ8_0], out: &mut [PreparedBlock]) {
    let c = _mm256_set1_epi8(K::OFFSET);
    for (y, o) in a.iter().zip(out.iter_mut()) {
        let m = maddubs(c, load32_i8(&y.qs));
        // The first 32 bytes hold the 16 i16 offset products.
        _mm256_storeu_si256(o.0.as_mut_ptr().cast(), m);
    }
}

#[inline(always)]
unsafe fn load_prepared(p: &PreparedBlock) -> __m256i {
    _mm256_loadu_si256(p.0.as_ptr().cast())
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot32_prepared<K: OffsetKernel>(
    w: &[K::W],
    a: &[BlockQ8_0],
    pre: &[PreparedBlock],
) -> f32 {
    let n = w.len().min(a.len()).min(pre.len());
    let (w, a, pre) = (&w[..n], &a[..n], &pre[..n]);
    let mut acc = Acc2::new();
    let mut i = 0;
    while i + 1 < n {
        let (x0, x1, y0, y1) = (&w[i], &w[i + 1], &a[i], &a[i + 1]);
        let (d0, d1) = h2f_prod_x2(
            K::w_scale(x0),
            K::a_scale(y0),
            K::w_scale(x1),
            K::a_scale(y1),
        );
        let p0 = (load32_i8(&y0.qs), load_prepared(&pre[i]));
        let p1 = (load32_i8(&y1.qs), load_prepared(&pre[i + 1]));
        acc.add_prepped::<K, 0>(d0, K::decode(x0), p0, x0, y0);
        acc.add_prepped::<K, 1>(d1, K::decode(x1), p1, x1, y1);
        i += 2;
    }
    if i < n {
        let (x, y) = (&w[i], &a[i]);
        let d = _mm256_set1_ps(h2f_prod(K::w_scale(x), K::a_scale(y)));
        let p = (load32_i8(&y.qs), load_prepared(&pre[i]));
        acc.add_prepped::<K, 0>(d, K::decode(x), p, x, y);
    }
    acc.finish::<K>()
}
