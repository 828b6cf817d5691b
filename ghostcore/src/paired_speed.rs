//! Decode speed of two configurations of one context, compared finely: blocks of a few
//! tokens alternate between a baseline and a candidate within one decode, so that both see
//! nearly the same moment and context length, and the median of the blocks' time ratios is
//! the speed-up. On a shared VM whose speed drifts by ±15% from second to second, whole
//! runs timed one after the other disagree by ±0.15; paired blocks agree within ±0.03
//! (`bench/results/2026-12-06-s7-path-tuning.md`). `ghost sweep` and `ghost bench` compare
//! sparse against dense FFNs this way, the path-cost check (`ghost tune`,
//! `gc_ctx_tune_path_costs`) measured against built-in path costs.

use std::sync::Arc;
use std::time::Instant;

use crate::context::Context;
use crate::model::ffn::DecodeFfn;
use crate::sparsity::engine::uninstall;
use crate::Result;

/// What [`paired_speed`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedSpeed {
    /// Tokens per second over all baseline blocks and over all candidate blocks.
    pub baseline_tok_s: f64,
    pub candidate_tok_s: f64,
    /// Median over block pairs of (baseline time per token / candidate time per token).
    pub speedup: f64,
    pub pairs: usize,
    /// Pairs in which the candidate block was faster per token.
    pub candidate_wins: usize,
}

/// Whether `wins` of `pairs` paired comparisons favouring one side is unlikely (one-sided
/// probability ≤ 5%) if neither side were faster: the sign test. Medians of paired blocks
/// move by a few percent between runs on a shared VM, so a verdict that changes what decode
/// does should pass this, not merely have a median above 1.
pub fn significant_wins(wins: usize, pairs: usize) -> bool {
    // P(X ≥ wins) for X ~ Binomial(pairs, 1/2), summed in f64 (pairs stays in the hundreds).
    let mut p_tail = 0.0f64;
    let mut term = 0.5f64.powi(pairs as i32); // C(pairs, 0) / 2^pairs
    for k in 0..=pairs {
        if k >= wins {
            p_tail += term;
        }
        term *= (pairs - k) as f64 / (k + 1) as f64;
    }
    pairs > 0 && wins <= pairs && p_tail <= 0.05
}

/// Which side of the comparison a block decodes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Baseline,
    Candidate,
}

/// Decode speed of the candidate configuration against the baseline: per repetition, reset
/// `ctx`, prefill `prompt` with the baseline, then decode `tokens` in pairs of blocks of
/// `block` tokens, one block per side, the order alternating from pair to pair (and from rep
/// to rep). `set` puts `ctx` in a side's configuration; the baseline is set again at the end.
/// `cpu`: time in CPU seconds of this process (with one thread the compute time, unaffected
/// by other processes sharing the cores), else wall-clock.
pub fn paired_speed(
    ctx: &mut Context,
    prompt: &[u32],
    tokens: &[u32],
    reps: usize,
    block: usize,
    cpu: bool,
    set: &mut dyn FnMut(&mut Context, Side) -> Result<()>,
) -> Result<PairedSpeed> {
    let block = block.max(1);
    let (mut base_t, mut cand_t, mut base_n, mut cand_n) = (0.0, 0.0, 0usize, 0usize);
    let mut ratios = Vec::new();
    let mut wins = 0;
    for rep in 0..reps.max(1) {
        set(ctx, Side::Baseline)?;
        ctx.reset();
        ctx.decode(prompt)?;
        for (pair, chunk) in tokens.chunks(2 * block).enumerate() {
            let (a, b) = chunk.split_at(chunk.len().min(block));
            if b.is_empty() {
                break;
            }
            let candidate_first = (pair + rep) % 2 == 1;
            let (first, second) = if candidate_first {
                (Side::Candidate, Side::Baseline)
            } else {
                (Side::Baseline, Side::Candidate)
            };
            set(ctx, first)?;
            let ta = time_decode(ctx, a, cpu)?;
            set(ctx, second)?;
            let tb = time_decode(ctx, b, cpu)?;
            let ((tbase, nbase), (tcand, ncand)) = if candidate_first {
                ((tb, b.len()), (ta, a.len()))
            } else {
                ((ta, a.len()), (tb, b.len()))
            };
            let ratio = (tbase / nbase as f64) / (tcand / ncand as f64);
            wins += usize::from(ratio > 1.0);
            ratios.push(ratio);
            (base_t, base_n, cand_t, cand_n) = (
                base_t + tbase,
                base_n + nbase,
                cand_t + tcand,
                cand_n + ncand,
            );
        }
    }
    set(ctx, Side::Baseline)?;
    if ratios.is_empty() {
        crate::bail!(
            InvalidArgument,
            "speed: {} tokens make no pair of {block}-token blocks",
            tokens.len()
        );
    }
    Ok(PairedSpeed {
        baseline_tok_s: base_n as f64 / base_t,
        candidate_tok_s: cand_n as f64 / cand_t,
        speedup: median(&mut ratios),
        pairs: ratios.len(),
        candidate_wins: wins,
    })
}

/// Decode speed of the FFNs `sparse` (per layer, as [`Context::decode_ffns`] holds them)
/// against the dense FFN, in paired blocks ([`paired_speed`]: the dense FFN is the
/// baseline; on an accelerated context its sparse FFN is switched on and off too). Leaves
/// the dense FFN installed.
pub fn paired_decode_speed(
    ctx: &mut Context,
    sparse: &[Option<Arc<dyn DecodeFfn>>],
    prompt: &[u32],
    tokens: &[u32],
    reps: usize,
    block: usize,
    cpu: bool,
) -> Result<PairedSpeed> {
    if sparse.is_empty() {
        crate::bail!(InvalidArgument, "speed: a model without layers");
    }
    paired_speed(ctx, prompt, tokens, reps, block, cpu, &mut |ctx, side| {
        if side == Side::Baseline {
            return uninstall(ctx);
        }
        install_decode_ffns(ctx, sparse)
    })
}

/// Puts the per-layer decode FFNs `ffns` (as [`Context::decode_ffns`] held them) back in
/// `ctx`, with an accelerated context's sparse FFN switched on.
pub fn install_decode_ffns(ctx: &mut Context, ffns: &[Option<Arc<dyn DecodeFfn>>]) -> Result<()> {
    for (layer, ffn) in ffns.iter().enumerate() {
        ctx.set_decode_ffn(layer, ffn.clone())?;
    }
    ctx.set_accelerated_ffn_sparsity_enabled(true)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time this process has used, in seconds.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID is always
    // available on Linux, and on failure `ts` stays zero (the caller then sees no progress).
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds to decode `tokens` one at a time in `ctx` as it stands.
fn time_decode(ctx: &mut Context, tokens: &[u32], cpu: bool) -> Result<f64> {
    let (t0, c0) = (Instant::now(), process_cpu_seconds());
    for &t in tokens {
        ctx.decode(&[t])?;
    }
    Ok(if cpu {
        process_cpu_seconds() - c0
    } else {
        t0.elapsed().as_secs_f64()
    }
    .max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::significant_wins;

    #[test]
    fn the_sign_test_needs_a_clear_majority() {
        // 24 pairs: P(X ≥ 17) = 0.032, P(X ≥ 16) = 0.076.
        assert!(significant_wins(17, 24));
        assert!(!significant_wins(16, 24));
        assert!(significant_wins(24, 24));
        // 5 pairs: even 5 of 5 (p = 0.031) passes, 4 of 5 (0.19) does not.
        assert!(significant_wins(5, 5));
        assert!(!significant_wins(4, 5));
        assert!(!significant_wins(0, 0));
        assert!(!significant_wins(3, 2));
        assert!(!significant_wins(0, 24));
    }
}
