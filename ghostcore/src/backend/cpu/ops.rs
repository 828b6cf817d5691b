//! Element-wise and normalization ops of the forward pass (scalar, f32), and attention.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// `f(j, row_j)` for every row of `data` (rows of `row_len`), rows split over `pool` in
/// chunks of at least `min_rows` (a batch smaller than that runs on the caller alone).
pub fn for_each_row_mut<F>(
    pool: &crate::threadpool::ThreadPool,
    data: &mut [f32],
    row_len: usize,
    min_rows: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 {
        return;
    }
    let m = data.len() / row_len;
    let chunk = pool.chunk_size(m, min_rows.max(1), 1);
    let rows = crate::threadpool::DisjointSlice::new(&mut data[..m * row_len]);
    pool.for_each_chunk(m, chunk, |_, js| {
        for j in js {
            // SAFETY: each row index is handed to exactly one chunk.
            f(j, unsafe { rows.range_mut(j * row_len..(j + 1) * row_len) });
        }
    });
}

/// `y = x / sqrt(mean(x²) + eps) * w`, as ggml computes it (sum of squares in f64).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), y.len());
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((yi, &xi), &wi) in y.iter_mut().zip(x).zip(w) {
        *yi = xi * scale * wi;
    }
}

/// In-place [`rms_norm`].
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = *xi * scale * wi;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (ggml's `gelu`).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// cos/sin table of one position: `n_rot / 2` angles `pos * freq_scale * base^(-2i/n_rot)`,
/// computed as ggml does (iterated f32 product of the per-pair ratio).
pub fn rope_table(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let t = theta * freq_scale;
        cos[i] = t.cos();
        sin[i] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotates one head (`x.len()` = head size; the first `2 * cos.len()` dims rotate).
/// `neox`: pairs are (i, i + n_rot/2); otherwise adjacent (2i, 2i+1).
pub fn rope_apply(x: &mut [f32], cos: &[f32], sin: &[f32], neox: bool) {
    let half = cos.len();
    if neox {
        for i in 0..half {
            let (a, b) = (x[i], x[i + half]);
            x[i] = a * cos[i] - b * sin[i];
            x[i + half] = a * sin[i] + b * cos[i];
        }
    } else {
        for i in 0..half {
            let (a, b) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = a * cos[i] - b * sin[i];
            x[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

/// Dot product with 8 independent accumulators (vectorizes well).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for k in 0..8 {
            acc[k] += a[8 * c + k] * b[8 * c + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

/// `y += a * x`.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Causal attention of one query head over `n_kv` cached positions.
///
/// `q`: the head's query (already scaled); `k_cache`/`v_cache`: rows of `k_stride`/`v_stride`
/// floats per position, the head's slice starting at `k_off`/`v_off`; keys at positions
/// `first..n_kv` are attended. `scores` is scratch of at least `n_kv`; `out` gets the head output.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    q: &[f32],
    k_cache: &[f32],
    k_stride: usize,
    k_off: usize,
    v_cache: &[f32],
    v_stride: usize,
    v_off: usize,
    first: usize,
    n_kv: usize,
    softcap: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let dv = out.len();
    let mut max = f32::NEG_INFINITY;
    for t in first..n_kv {
        let k = &k_cache[t * k_stride + k_off..t * k_stride + k_off + hd];
        let mut s = dot(q, k);
        if let Some(c) = softcap {
            s = (s / c).tanh() * c;
        }
        scores[t] = s;
        if s > max {
            max = s;
        }
    }
    let mut sum = 0.0f32;
    for s in &mut scores[first..n_kv] {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    out.fill(0.0);
    for t in first..n_kv {
        let v = &v_cache[t * v_stride + v_off..t * v_stride + v_off + dv];
        axpy(scores[t] * inv, v, out);
    }
}

/// Causal attention of one query head over an f16 KV cache, computed as ggml's CPU
/// flash-attention does: the query rounded to f16, q·k accumulated in f32, an online
/// softmax, and the value accumulator kept in f16 (rounded after every update).
///
/// `q`: the head's (already scaled) query; key `t` of this head is
/// `k_cache[t * k_stride + k_off..][..q.len()]`, value `t` likewise in `v_cache`; keys
/// `first..n_kv` are attended. `kbuf`/`vbuf` are scratch (head size / value size).
#[allow(clippy::too_many_arguments)]
pub fn attend_head_f16(
    q: &[f32],
    k_cache: &[f16],
    k_stride: usize,
    k_off: usize,
    v_cache: &[f16],
    v_stride: usize,
    v_off: usize,
    first: usize,
    n_kv: usize,
    softcap: Option<f32>,
    qbuf: &mut [f32],
    kbuf: &mut [f32],
    vbuf: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let dv = out.len();
    #[cfg(target_arch = "x86_64")]
    if hd % 8 == 0 && dv % 8 == 0 && crate::quant::active_isa() == crate::quant::Isa::Avx2 {
        assert!(n_kv <= k_cache.len() / k_stride.max(1) && n_kv <= v_cache.len() / v_stride.max(1));
        assert!(k_off + hd <= k_stride && v_off + dv <= v_stride && qbuf.len() >= hd);
        // SAFETY: AVX2+FMA+F16C are available (active ISA); every key/value row read lies
        // within the caches (checked just above), and `qbuf`/`out` hold hd/dv floats.
        unsafe {
            attend_head_f16_avx2(
                q, k_cache, k_stride, k_off, v_cache, v_stride, v_off, first, n_kv, softcap, qbuf,
                out,
            )
        };
        return;
    }
    ROUND.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() < hd.max(dv) {
            r.resize(hd.max(dv), f16::ZERO);
        }
        let qb = &mut qbuf[..hd];
        qb.copy_from_slice(q);
        round_to_f16(qb, &mut r[..hd]);
        let mut max = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        // `out` holds the f16-valued accumulator.
        out.fill(0.0);
        for t in first..n_kv {
            let kr = &k_cache[t * k_stride + k_off..t * k_stride + k_off + hd];
            kr.convert_to_f32_slice(&mut kbuf[..hd]);
            let mut s = dot(qb, &kbuf[..hd]);
            if let Some(c) = softcap {
                s = (s / c).tanh() * c;
            }
            let (ms, vs) = online_softmax_step(s, &mut max);
            if ms != 1.0 {
                out.iter_mut().for_each(|o| *o *= ms);
                round_to_f16(out, &mut r[..dv]);
            }
            let vr = &v_cache[t * v_stride + v_off..t * v_stride + v_off + dv];
            vr.convert_to_f32_slice(&mut vbuf[..dv]);
            for (o, &v) in out.iter_mut().zip(&vbuf[..dv]) {
                *o = v.mul_add(vs, *o);
            }
            round_to_f16(out, &mut r[..dv]);
            sum = sum * ms + vs;
        }
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        out.iter_mut().for_each(|o| *o *= inv);
    })
}

/// AVX2/F16C version of [`attend_head_f16`] (same arithmetic), in three passes so that no
/// long dependency chain runs through memory:
/// 1. every score `q·k_t` (four keys interleaved, each summed exactly as one key alone);
/// 2. the online-softmax recurrence over the scores (scalar, one `exp` per key), recording
///    per key the rescale factor `ms_t` of the accumulator and the weight `vs_t` of `v_t`;
/// 3. the f16-rounded value accumulator, 64 lanes at a time held in registers across keys.
///
/// Every value goes through the same operations in the same order as the single-pass form
/// (rescale by `ms_t` when it is not 1, then `round(v_t · vs_t + acc)`), so results are
/// identical to it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_head_f16_avx2(
    q: &[f32],
    k_cache: &[f16],
    k_stride: usize,
    k_off: usize,
    v_cache: &[f16],
    v_stride: usize,
    v_off: usize,
    first: usize,
    n_kv: usize,
    softcap: Option<f32>,
    qbuf: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    const RN: i32 = _MM_FROUND_TO_NEAREST_INT;
    let hd = q.len();
    let dv = out.len();
    let n = n_kv.saturating_sub(first);
    SOFTMAX.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < 2 * n {
            buf.resize(2 * n, 0.0);
        }
        let (ms_t, vs_t) = buf.split_at_mut(n);
        // SAFETY (whole body): pointers are derived from slices whose bounds the caller
        // checked (keys and values of positions < n_kv, head slices within the stride);
        // every 8-wide access stays below hd (resp. dv), multiples of 8; the score buffers
        // hold n values each.
        unsafe {
            let round = |v: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<RN>(v));
            for i in (0..hd).step_by(8) {
                _mm256_storeu_ps(
                    qbuf.as_mut_ptr().add(i),
                    round(_mm256_loadu_ps(q.as_ptr().add(i))),
                );
            }
            let hsum = |acc: __m256| {
                let hi = _mm256_extractf128_ps(acc, 1);
                let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
            };
            let key = |t: usize| k_cache.as_ptr().add(t * k_stride + k_off) as *const __m128i;
            // Pass 1: scores into vs_t.
            let mut t = 0;
            while t + 4 <= n {
                let kp = [
                    key(first + t),
                    key(first + t + 1),
                    key(first + t + 2),
                    key(first + t + 3),
                ];
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in (0..hd).step_by(8) {
                    let qv = _mm256_loadu_ps(qbuf.as_ptr().add(i));
                    for (a, p) in acc.iter_mut().zip(&kp) {
                        *a =
                            _mm256_fmadd_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128(p.add(i / 8))), *a);
                    }
                }
                for (u, a) in acc.iter().enumerate() {
                    vs_t[t + u] = hsum(*a);
                }
                t += 4;
            }
            while t < n {
                let kp = key(first + t);
                let mut acc = _mm256_setzero_ps();
                for i in (0..hd).step_by(8) {
                    let kv = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i / 8)));
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qbuf.as_ptr().add(i)), kv, acc);
                }
                vs_t[t] = hsum(acc);
                t += 1;
            }
            // Pass 2: the online-softmax recurrence.
            let mut max = f32::NEG_INFINITY;
            let mut sum = 0.0f32;
            for (ms_o, vs_o) in ms_t.iter_mut().zip(vs_t.iter_mut()) {
                let mut s = *vs_o;
                if let Some(c) = softcap {
                    s = (s / c).tanh() * c;
                }
                let (ms, vs) = online_softmax_step(s, &mut max);
                *ms_o = ms;
                *vs_o = vs;
                sum = sum * ms + vs;
            }
            let inv = _mm256_set1_ps(if sum == 0.0 { 0.0 } else { 1.0 / sum });
            // Pass 3: the value accumulator, a group of 8-lane chunks at a time.
            let chunks = dv / 8;
            let mut c0 = 0;
            while c0 < chunks {
                let g = (chunks - c0).min(8);
                let mut acc = [_mm256_setzero_ps(); 8];
                for (t, (&ms, &vs)) in ms_t.iter().zip(vs_t.iter()).enumerate() {
                    let vp = v_cache
                        .as_ptr()
                        .add((first + t) * v_stride + v_off + 8 * c0)
                        as *const __m128i;
                    if ms != 1.0 {
                        let m8 = _mm256_set1_ps(ms);
                        for a in &mut acc[..g] {
                            *a = round(_mm256_mul_ps(*a, m8));
                        }
                    }
                    let v8 = _mm256_set1_ps(vs);
                    for (c, a) in acc[..g].iter_mut().enumerate() {
                        let vv = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c)));
                        *a = round(_mm256_fmadd_ps(vv, v8, *a));
                    }
                }
                for (c, a) in acc[..g].iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * (c0 + c)), _mm256_mul_ps(*a, inv));
                }
                c0 += g;
            }
        }
    })
}

thread_local! {
    /// Per-key softmax factors of [`attend_head_f16_avx2`].
    static SOFTMAX: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    static ROUND: std::cell::RefCell<Vec<f16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rounds every value to the nearest f16 (through `tmp`, same length; SIMD conversions).
fn round_to_f16(x: &mut [f32], tmp: &mut [f16]) {
    tmp.convert_from_f32_slice(x);
    tmp.convert_to_f32_slice(x);
}

/// One step of the online softmax: with `max` the running maximum of the scores so far
/// (updated here), the factor that rescales what was accumulated before score `s` and the
/// weight of `s` itself. The first score gets (0, 1).
#[inline]
fn online_softmax_step(s: f32, max: &mut f32) -> (f32, f32) {
    if s > *max {
        let ms = if *max == f32::NEG_INFINITY {
            0.0
        } else {
            (*max - s).exp()
        };
        *max = s;
        (ms, 1.0)
    } else {
        (1.0, (s - *max).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let mut y = [0.0f32; 4];
        rms_norm(&x, &w, 1e-6, &mut y);
        let ms = (1.0 + 4.0 + 9.0 + 0.25) / 4.0f64;
        let s = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..4 {
            assert!((y[i] as f64 - x[i] as f64 * s * w[i] as f64).abs() < 1e-6);
        }
    }

    /// RoPE must equal the rotation by angle pos * base^(-2i/d) computed in f64.
    #[test]
    fn rope_matches_closed_form() {
        let d = 8;
        for &neox in &[false, true] {
            let x: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = x.clone();
            let (mut c, mut s) = (vec![0.0; d / 2], vec![0.0; d / 2]);
            rope_table(7, d, 10000.0, 1.0, &mut c, &mut s);
            rope_apply(&mut y, &c, &s, neox);
            for i in 0..d / 2 {
                let th = 7.0f64 * 10000f64.powf(-2.0 * i as f64 / d as f64);
                let (a, b) = if neox {
                    (i, i + d / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let ea = x[a] as f64 * th.cos() - x[b] as f64 * th.sin();
                let eb = x[a] as f64 * th.sin() + x[b] as f64 * th.cos();
                assert!((y[a] as f64 - ea).abs() < 1e-4, "{neox} {i}");
                assert!((y[b] as f64 - eb).abs() < 1e-4, "{neox} {i}");
            }
        }
    }

    /// Attention against a naive f64 softmax(q·K)·V.
    #[test]
    fn attention_matches_naive() {
        let (hd, n) = (4, 5);
        let q: Vec<f32> = (0..hd).map(|i| 0.3 * i as f32 - 0.4).collect();
        let k: Vec<f32> = (0..n * hd)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.2)
            .collect();
        let v: Vec<f32> = (0..n * hd)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let mut scores = vec![0.0; n];
        let mut out = vec![0.0; hd];
        attend_head(&q, &k, hd, 0, &v, hd, 0, 1, n, None, &mut scores, &mut out);
        let s: Vec<f64> = (1..n)
            .map(|t| (0..hd).map(|i| q[i] as f64 * k[t * hd + i] as f64).sum())
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for i in 0..hd {
            let e: f64 = (1..n)
                .map(|t| (s[t - 1] - m).exp() / z * v[t * hd + i] as f64)
                .sum();
            assert!((out[i] as f64 - e).abs() < 1e-5);
        }
    }

    /// The f16-cache attention against the same naive f64 reference (f16 tolerance).
    #[test]
    fn f16_attention_matches_naive() {
        let (hd, n) = (8, 40);
        let q: Vec<f32> = (0..hd).map(|i| 0.3 * i as f32 - 0.9).collect();
        let k: Vec<f32> = (0..n * hd)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.2)
            .collect();
        let v: Vec<f32> = (0..n * hd)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
        let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let (mut qb, mut kb, mut vb, mut out) =
            (vec![0.0; hd], vec![0.0; hd], vec![0.0; hd], vec![0.0; hd]);
        let first = 3;
        attend_head_f16(
            &q, &k16, hd, 0, &v16, hd, 0, first, n, None, &mut qb, &mut kb, &mut vb, &mut out,
        );
        let s: Vec<f64> = (first..n)
            .map(|t| (0..hd).map(|i| q[i] as f64 * k[t * hd + i] as f64).sum())
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for i in 0..hd {
            let e: f64 = (first..n)
                .map(|t| (s[t - first] - m).exp() / z * v[t * hd + i] as f64)
                .sum();
            assert!((out[i] as f64 - e).abs() < 5e-3, "{i}: {} vs {e}", out[i]);
        }
    }

    #[test]
    fn activations() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        let x = 0.7f64;
        let g = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        assert!((gelu_tanh(0.7) as f64 - g).abs() < 1e-6);
    }
}
