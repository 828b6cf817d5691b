//! Vectorized gate activations for prompt batches: SiLU and tanh-GELU over whole slices.
//!
//! Both are written as `x · σ(z)`: SiLU with `z = x`, and tanh-GELU through the identity
//! `½·x·(1 + tanh(y)) = x / (1 + e^(−2y))`, `y = √(2/π)·(x + 0.044715·x³)`. With AVX2 the
//! exponential is a range-reduced polynomial (`e^x = 2^n · e^r`, `|r| ≤ ln2/2`, the classic
//! degree-6 minimax fit of `e^r`) accurate to about one ulp, so results stay within a few f32
//! ulps of the scalar functions in [`super::ops`], which remain the reference (and are what
//! single-token decode and the sparse FFN use, bit-identical to each other).

use super::ops;
use crate::model::config::Activation;

/// `x[i] = act(x[i])` for every element, vectorized where the CPU allows.
pub fn activate_slice(act: Activation, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::active_isa() == crate::quant::Isa::Avx2 {
        // SAFETY: the active ISA includes AVX2 and FMA (checked at run time).
        unsafe { avx2::activate(act, x) };
        return;
    }
    activate_scalar(act, x);
}

fn activate_scalar(act: Activation, x: &mut [f32]) {
    match act {
        Activation::Silu => x.iter_mut().for_each(|v| *v = ops::silu(*v)),
        Activation::GeluTanh => x.iter_mut().for_each(|v| *v = ops::gelu_tanh(*v)),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Activation;
    use std::arch::x86_64::*;

    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044_715;

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn activate(act: Activation, x: &mut [f32]) {
        let n8 = x.len() / 8 * 8;
        let p = x.as_mut_ptr();
        let one = _mm256_set1_ps(1.0);
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n8 <= x.len(); AVX2/FMA per this function's contract.
            unsafe {
                let v = _mm256_loadu_ps(p.add(i));
                // Exponent of the sigmoid's denominator: −x (SiLU) or −2y (GELU).
                let z = match act {
                    Activation::Silu => _mm256_sub_ps(_mm256_setzero_ps(), v),
                    Activation::GeluTanh => {
                        let v2 = _mm256_mul_ps(v, v);
                        let inner =
                            _mm256_fmadd_ps(_mm256_set1_ps(GELU_COEF_A), v2, _mm256_set1_ps(1.0));
                        let y =
                            _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(SQRT_2_OVER_PI), v), inner);
                        _mm256_mul_ps(_mm256_set1_ps(-2.0), y)
                    }
                };
                let r = _mm256_div_ps(v, _mm256_add_ps(one, exp(z)));
                _mm256_storeu_ps(p.add(i), r);
            }
        }
        super::activate_scalar(act, &mut x[n8..]);
    }

    /// `e^x` for 8 lanes: `+∞` above 88.72 (where f32 overflows), and for `x < −87` the
    /// value at −87 (which `1 + e^x` rounds to 1 anyway).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp(x: __m256) -> __m256 {
        // ln 2 split into a part exact in few bits and the remainder (Cody–Waite).
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let overflow = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.722_83));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // e^r ≈ 1 + r + r²·p(r)
        let er = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, r),
            _mm256_set1_ps(1.0),
        );
        // 2^n through the exponent field (n in [−126, 127]).
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_blendv_ps(
            _mm256_mul_ps(er, pow2),
            _mm256_set1_ps(f32::INFINITY),
            overflow,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64 closed forms over a wide range, including the clamped tails.
    #[test]
    fn activations_match_f64_definitions() {
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.013)
            .chain([-200.0, -90.0, -30.0, 30.0, 90.0, 200.0, 0.0, -0.0, 1e-30])
            .collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let mut y = xs.clone();
            activate_slice(act, &mut y);
            for (&x, &got) in xs.iter().zip(&y) {
                let xd = x as f64;
                let want = match act {
                    Activation::Silu => xd / (1.0 + (-xd).exp()),
                    Activation::GeluTanh => {
                        let t = ((2.0 / std::f64::consts::PI).sqrt()
                            * (xd + 0.044715 * xd * xd * xd))
                            .tanh();
                        0.5 * xd * (1.0 + t)
                    }
                };
                // A few ulps of the result (SiLU) or of the input (GELU: the scalar form
                // ½·x·(1 + tanh) loses everything below ulp(x) in its tail); results below
                // 1e-30 (where the f32 exponential overflows) may be any tiny value.
                let scale = match act {
                    Activation::Silu => want.abs(),
                    Activation::GeluTanh => want.abs().max(xd.abs()),
                };
                let tol = 4.0 * f32::EPSILON as f64 * scale + 1e-30;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{act:?}({x}) = {got}, want {want}"
                );
            }
        }
    }
}
