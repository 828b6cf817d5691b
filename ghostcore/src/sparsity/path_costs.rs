//! What each way of computing a sparse FFN projection costs in time, so that decode takes the
//! fastest one per token and layer, not merely the one that reads the fewest bytes.
//!
//! A path is priced by its time relative to the dense kernel over the whole matrix, as a
//! function of the share of the matrix's bytes it reads ([`TimeCurve`]). The curves are
//! measured, not modelled: from memory, skipping scattered rows saves far less time than
//! bytes. On the 2-core AMD EPYC VM of `bench/results/2026-11-23-s6-path-costs.md`
//! (`bench/sparsity/path_costs.rs`, raw runs in `bench/results/2026-11-23-s6-path-costs/`;
//! interleaved reps, medians, matrices cycled through more than the 32 MiB L3):
//! - **gathered rows** (a random kept share of Q5_0 rows of 396, 1,408 and 2,816 bytes, ids
//!   sorted) take about the time of *all* rows while 80–90% are kept, 0.85–0.92 at 60%,
//!   0.63–0.69 at 40% and 0.33–0.47 at 20%: the hardware prefetchers stream across short gaps
//!   and fetch much of what is skipped, and every gap restarts their stream;
//! - the **input-major copy** over the kept input columns (`bench/sparsity/input_major.rs`,
//!   `bench/results/2026-11-23-s5-input-major.md`, VNNI, from memory) takes 0.9 of the rows'
//!   time at 10% dropped, 0.8 at 20%, 0.6 at 50%;
//! - the **exact down copies** are slow at SmolLM2's width 576 (the dense down streams
//!   ~20 GB/s there, the copies 7–10 GB/s): the Q4_K copy 2.3× the dense time at 80% of the
//!   neurons active, the Q6_K copy 1.8× (in cache it matches the dense time: from memory its
//!   short rows, walked side by side, stall), break-even near 30–40%; at the Llama-3-8B shape
//!   (4096 × 14336) the Q4_K copy costs its bytes (0.98 at 80% active, 0.59 at 40%) and the
//!   Q6_K copy 1.3–2.1× its bytes (1.04 at 81% of the bytes, 0.70 at 45%, 0.36 at 17%);
//! - the **requantized Q8_0 copy** (f32 axpy over neuron rows; `2026-11-23-s5-sparsity.md`):
//!   1.4–2× its bytes at width 576, 1.0–1.5× at 4096.
//!
//! Widths from 2048 take the 8B curves, narrower layers the 576 ones (two measured widths,
//! nothing in between). The scalar kernels were not measured: bytes alone decide there. Other
//! CPUs will differ; the curves only steer the choice, and the bytes reported are always
//! those the chosen path reads.

use super::exact_down::ExactDown;
use super::input_major::InputMajorKernel;
use crate::quant::GgmlType;

/// Time of a path relative to the dense kernel over the whole matrix, against the share of
/// the matrix's bytes the path reads: piecewise linear through measured points (ascending
/// shares, starting at share 0), extended past the last point with its slope.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeCurve(&'static [(f64, f64)]);

impl TimeCurve {
    /// Time proportional to bytes (1.0 at the whole matrix).
    pub const BYTES: TimeCurve = TimeCurve(&[(0.0, 0.0), (1.0, 1.0)]);

    /// The relative time at `share` (clamped to ≥ 0).
    pub fn at(&self, share: f64) -> f64 {
        let p = self.0;
        let share = share.max(0.0);
        let i = p
            .iter()
            .position(|&(x, _)| x >= share)
            .unwrap_or(p.len() - 1)
            .max(1);
        let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
        y0 + (y1 - y0) * (share - x0) / (x1 - x0)
    }
}

const GATHERED_ROWS: TimeCurve = TimeCurve(&[
    (0.0, 0.0),
    (0.2, 0.40),
    (0.4, 0.66),
    (0.6, 0.89),
    (0.8, 1.03),
    (1.0, 1.05),
]);
const INPUT_MAJOR: TimeCurve = TimeCurve(&[(0.0, 0.0), (0.5, 0.60), (0.8, 0.83), (1.0, 0.93)]);
/// Exact copies against the share of the dense down's bytes they read (scales included).
const EXACT_Q4_K_576: TimeCurve = TimeCurve(&[
    (0.0, 0.0),
    (0.29, 0.62),
    (0.39, 0.74),
    (0.57, 1.28),
    (0.75, 1.94),
    (0.93, 2.32),
]);
const EXACT_Q4_K_4096: TimeCurve = TimeCurve(&[
    (0.0, 0.0),
    (0.30, 0.36),
    (0.40, 0.43),
    (0.57, 0.59),
    (0.75, 0.75),
    (0.93, 0.98),
]);
/// The Q6_K copy with 64-output tiles unpacked four rows at a time (`exact_down/q6_k.rs`):
/// medians of 5 runs of `bench/sparsity/path_costs.rs` on the same VM, load ~1.5–1.8.
const EXACT_Q6_K_576: TimeCurve = TimeCurve(&[
    (0.0, 0.0),
    (0.17, 0.68),
    (0.27, 0.86),
    (0.45, 1.13),
    (0.63, 1.43),
    (0.81, 1.81),
]);
const EXACT_Q6_K_4096: TimeCurve = TimeCurve(&[
    (0.0, 0.0),
    (0.17, 0.36),
    (0.27, 0.49),
    (0.45, 0.70),
    (0.63, 0.84),
    (0.81, 1.04),
]);
const Q8_0_COPY_576: TimeCurve = TimeCurve(&[(0.0, 0.0), (1.0, 1.6)]);
const Q8_0_COPY_4096: TimeCurve = TimeCurve(&[(0.0, 0.0), (1.0, 1.2)]);

/// Width from which a layer takes the curves measured at 4096.
const WIDE: usize = 2048;

/// The time curves of this process's kernels for a layer of width `n_embd`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathCosts {
    gathered_rows: TimeCurve,
    input_major: TimeCurve,
    exact_q4_k_down: TimeCurve,
    exact_q6_k_down: TimeCurve,
    requantized_q8_0_down: TimeCurve,
}

impl PathCosts {
    /// Time proportional to bytes on every path: the path reading the fewest bytes wins.
    pub const BYTES: PathCosts = PathCosts {
        gathered_rows: TimeCurve::BYTES,
        input_major: TimeCurve::BYTES,
        exact_q4_k_down: TimeCurve::BYTES,
        exact_q6_k_down: TimeCurve::BYTES,
        requantized_q8_0_down: TimeCurve::BYTES,
    };

    pub fn of_this_process(n_embd: usize) -> Self {
        let wide = n_embd >= WIDE;
        match InputMajorKernel::best() {
            InputMajorKernel::Vnni | InputMajorKernel::Avx2 => PathCosts {
                gathered_rows: GATHERED_ROWS,
                input_major: INPUT_MAJOR,
                exact_q4_k_down: if wide {
                    EXACT_Q4_K_4096
                } else {
                    EXACT_Q4_K_576
                },
                exact_q6_k_down: if wide {
                    EXACT_Q6_K_4096
                } else {
                    EXACT_Q6_K_576
                },
                requantized_q8_0_down: if wide { Q8_0_COPY_4096 } else { Q8_0_COPY_576 },
            },
            InputMajorKernel::Scalar => PathCosts::BYTES,
        }
    }

    /// Reading `n_rows` of a matrix's `n_all` rows: all rows in order cost 1.
    pub fn gathered_rows(&self, n_rows: usize, n_all: usize) -> f64 {
        if n_rows >= n_all {
            1.0
        } else {
            self.gathered_rows.at(share(n_rows, n_all))
        }
    }

    /// The input-major copy reading `bytes` of a matrix of `all` bytes.
    pub fn input_major(&self, bytes: usize, all: usize) -> f64 {
        self.input_major.at(share(bytes, all))
    }

    /// An exact down copy reading `bytes` of a dense down of `all` bytes.
    pub fn exact_down(&self, e: &ExactDown, bytes: usize, all: usize) -> f64 {
        let curve = match e {
            ExactDown::Q4K(_) => self.exact_q4_k_down,
            ExactDown::Q6K(_) => self.exact_q6_k_down,
        };
        curve.at(share(bytes, all))
    }

    /// A requantized down copy of type `ty` reading `bytes`, against a dense down of `all`
    /// bytes (measured for Q8_0, the default copy type; other types: bytes alone).
    pub fn requantized_down(&self, ty: GgmlType, bytes: usize, all: usize) -> f64 {
        let curve = if ty == GgmlType::Q8_0 {
            self.requantized_q8_0_down
        } else {
            TimeCurve::BYTES
        };
        curve.at(share(bytes, all))
    }
}

fn share(part: usize, all: usize) -> f64 {
    part as f64 / all.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_interpolate_and_extend() {
        let c = TimeCurve(&[(0.0, 0.0), (0.5, 1.0), (1.0, 1.5)]);
        assert_eq!(c.at(0.0), 0.0);
        assert!((c.at(0.25) - 0.5).abs() < 1e-12);
        assert!((c.at(0.75) - 1.25).abs() < 1e-12);
        assert!(
            (c.at(1.5) - 2.0).abs() < 1e-12,
            "extended with the last slope"
        );
        assert_eq!(c.at(-1.0), 0.0);
        assert!((TimeCurve::BYTES.at(0.3) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn measured_curves_rise_with_the_share() {
        for c in [
            GATHERED_ROWS,
            INPUT_MAJOR,
            EXACT_Q4_K_576,
            EXACT_Q4_K_4096,
            EXACT_Q6_K_576,
            EXACT_Q6_K_4096,
            Q8_0_COPY_576,
            Q8_0_COPY_4096,
        ] {
            assert_eq!(c.0[0], (0.0, 0.0));
            for w in c.0.windows(2) {
                assert!(w[1].0 > w[0].0 && w[1].1 > w[0].1, "{c:?}");
            }
        }
    }

    #[test]
    fn all_rows_in_order_cost_the_dense_time() {
        let p = PathCosts::of_this_process(576);
        assert_eq!(p.gathered_rows(10, 10), 1.0);
        // From memory, a walk over most rows with gaps is no faster than all rows.
        if InputMajorKernel::best() != InputMajorKernel::Scalar {
            assert!(p.gathered_rows(8, 10) >= 1.0);
            assert!(p.gathered_rows(2, 10) < 0.5);
        }
    }
}
