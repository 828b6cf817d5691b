//! f32 dot products for the dequantized-weight path (AVX2+FMA when available).

/// `out[r] = dot(rows[r], x)` for 4 rows of length `x.len()` at once (sharing the loads of
/// `x`). `rows` holds the 4 rows back to back.
pub fn dot4(rows: &[f32], x: &[f32], out: &mut [f32; 4]) {
    let n = x.len();
    assert!(rows.len() >= 4 * n, "dot4: rows too short");
    #[cfg(target_arch = "x86_64")]
    if n % 8 == 0 && crate::quant::active_isa() == crate::quant::Isa::Avx2 {
        // SAFETY: the active ISA is AVX2+FMA (checked at run time by the quant module), and
        // the loads below stay within `rows[..4n]` and `x[..n]` (n is a multiple of 8).
        unsafe { dot4_avx2(rows, x, out) };
        return;
    }
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(&rows[r * n..(r + 1) * n], x);
    }
}

/// Scalar dot with 8 independent accumulators.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    super::ops::dot(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(rows: &[f32], x: &[f32], out: &mut [f32; 4]) {
    use std::arch::x86_64::*;
    let n = x.len();
    let (p0, xp) = (rows.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n, and row r spans [r*n, (r+1)*n) within `rows`.
        unsafe {
            let xv = _mm256_loadu_ps(xp.add(i));
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p0.add(i)), xv, acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p0.add(n + i)), xv, acc[1]);
            acc[2] = _mm256_fmadd_ps(_mm256_loadu_ps(p0.add(2 * n + i)), xv, acc[2]);
            acc[3] = _mm256_fmadd_ps(_mm256_loadu_ps(p0.add(3 * n + i)), xv, acc[3]);
        }
        i += 8;
    }
    for (o, a) in out.iter_mut().zip(acc) {
        let hi = _mm256_extractf128_ps(a, 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(a), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        *o = _mm_cvtss_f32(s);
    }
}
