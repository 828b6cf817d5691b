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
//! - the **exact down copies** were slow at SmolLM2's width 576 while their kernels walked
//!   the rows of a run side by side a few bytes at a time (the Q4_K copy 2.3× the dense time
//!   at 80% of the neurons active, the Q6_K copy 1.8×; in cache they matched the dense time).
//!   Read row after row (`exact_down/`, `bench/results/2026-12-07-s10-exact-down/`, a Zen 3
//!   VM), they cost 0.97 of the dense time at 63% of the bytes (Q6_K) and 0.99 at 58%
//!   (Q4_K), break-even near 60%: on AVX2 the neuron-major sums need byte interleaving that
//!   the dense dot product does not, so they are compute-bound at about the dense cost per
//!   weight. At the Llama-3-8B shape (4096 × 14336) they cost about their bytes (Q6_K 0.67
//!   at 63%, Q4_K 0.88 at 75%);
//! - the **requantized Q8_0 copy** (f32 axpy over neuron rows; `2026-11-23-s5-sparsity.md`):
//!   1.4–2× its bytes at width 576, 1.0–1.5× at 4096.
//!
//! Widths from 2048 take the 8B curves, narrower layers the 576 ones (two measured widths,
//! nothing in between). The scalar kernels were not measured: bytes alone decide there.
//!
//! Other CPUs differ: on an AVX2-only EPYC VM (`bench/results/2026-12-06-s7-path-tuning.md`)
//! gathered 396-byte rows took 0.84 of the dense time at 80% kept, not 1.03, and the exact
//! Q4_K copy at the 8B width 1.39 at 93% of the bytes, not 0.98; memory traffic from other
//! cores moves the curves too. So a process can measure the curves of the gathered rows and
//! the exact down copies on its own CPU at a model's own shape ([`measure`], a few seconds),
//! cache them ([`cache`]) and install them ([`install_tuned`]): `ghost tune` measures (and
//! `ghost run`'s first sparse run with a mode and thread count, for models up to 512 MiB), the
//! front ends and the C ABI use what it cached. Measuring alone is not enough: kernels
//! timed in isolation are not decode, and on that VM the measured curves gained 2 points on
//! SmolLM2 but chose the dense down at the 8B shape's 50% setting, where the built-in curves'
//! exact copy was faster. So `ghost tune` also decodes with both sets of curves in paired
//! blocks and records the verdict: curves that decoded slower stay on file unused
//! ([`cache::install_cached`]). After that it tries each class of sparse paths decode took
//! never taken ([`PathClass`], [`PathCosts::off`]) and turns off, for the mode it checked,
//! those decode was faster without in significantly more pairs. Everything is per thread
//! count: on a 2-core Zen 3 VM the input-major copy paid at 1 thread and decoded SmolLM2
//! `budget:2` at 0.75–0.89× the dense speed at 2, where the curves measured with 2 workers
//! refuse it (`bench/results/2026-12-07-s9-thread-tuning.md`). The curves only steer the
//! choice: the bytes reported are always those the chosen path reads.

pub mod cache;
pub mod check;
pub mod measure;

use std::sync::RwLock;

use super::exact_down::ExactDown;
use super::input_major::InputMajorKernel;
use crate::quant::GgmlType;

/// Time of a path relative to the dense kernel over the whole matrix, against the share of
/// the matrix's bytes the path reads: piecewise linear through measured points (ascending
/// shares, starting at share 0), extended past the last point with its slope.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeCurve {
    points: [(f64, f64); TimeCurve::MAX_POINTS],
    len: usize,
}

impl TimeCurve {
    /// The most points a curve holds.
    pub const MAX_POINTS: usize = 8;

    /// Time proportional to bytes (1.0 at the whole matrix).
    pub const BYTES: TimeCurve = TimeCurve::new(&[(0.0, 0.0), (1.0, 1.0)]);

    /// A curve through `points` (2 to [`Self::MAX_POINTS`], shares strictly ascending from
    /// 0; checked at compile time for the built-in curves).
    pub const fn new(points: &[(f64, f64)]) -> TimeCurve {
        assert!(points.len() >= 2 && points.len() <= Self::MAX_POINTS);
        assert!(points[0].0 == 0.0);
        let mut c = TimeCurve {
            points: [(0.0, 0.0); Self::MAX_POINTS],
            len: points.len(),
        };
        let mut i = 0;
        while i < points.len() {
            assert!(i == 0 || points[i].0 > points[i - 1].0);
            c.points[i] = points[i];
            i += 1;
        }
        c
    }

    /// A curve from measured `(share, time)` points (any order): sorted by share, a point
    /// (0, 0) put first, and each time raised to at least the one before it, since reading
    /// more of a matrix never takes less time and a lower later median is noise. `None`
    /// unless there are 1 to `MAX_POINTS - 1` points with finite shares in (0, 1.5] and
    /// finite times ≥ 0, all shares distinct. Values are kept to the 4 decimals the cache
    /// file holds ([`cache`]), so that curves just measured and the same curves read back
    /// are equal (and print alike).
    pub fn from_measured(points: &[(f64, f64)]) -> Option<TimeCurve> {
        if points.is_empty() || points.len() >= Self::MAX_POINTS {
            return None;
        }
        let round = |v: f64| (v * 1e4).round() / 1e4;
        let mut p: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (round(x), round(y))).collect();
        let ok = |&(x, y): &(f64, f64)| {
            x.is_finite() && y.is_finite() && x > 0.0 && x <= 1.5 && y >= 0.0
        };
        if !p.iter().all(ok) {
            return None;
        }
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        if p.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let mut c = TimeCurve {
            points: [(0.0, 0.0); Self::MAX_POINTS],
            len: p.len() + 1,
        };
        let mut floor = 0.0f64;
        for (slot, (x, y)) in c.points[1..].iter_mut().zip(p) {
            floor = floor.max(y);
            *slot = (x, floor);
        }
        Some(c)
    }

    /// The curve's points, `(0, 0)` first.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points[..self.len]
    }

    /// The relative time at `share` (clamped to ≥ 0).
    pub fn at(&self, share: f64) -> f64 {
        let p = self.points();
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

const GATHERED_ROWS: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.2, 0.40),
    (0.4, 0.66),
    (0.6, 0.89),
    (0.8, 1.03),
    (1.0, 1.05),
]);
const INPUT_MAJOR: TimeCurve = TimeCurve::new(&[(0.0, 0.0), (0.5, 0.60), (0.8, 0.83), (1.0, 0.93)]);
/// The AVX2 (no VNNI) input-major kernel split over two or more workers: compute-bound, it
/// scales worse than the dense rows (`ghost tune -t 2` on a 2-core Zen 3 VM at SmolLM2's
/// shape, `bench/results/2026-12-07-s9-thread-tuning.md`, where the single-thread curve
/// decoded `budget:2` at 0.75–0.89× the dense speed).
const INPUT_MAJOR_AVX2_THREADS: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.55, 0.66),
    (0.73, 0.94),
    (0.82, 1.15),
    (0.91, 1.28),
    (1.0, 1.28),
]);
/// Exact copies against the share of the dense down's bytes they read (scales included),
/// rows read one after another (`exact_down/`): medians of 3 runs of
/// `bench/sparsity/path_costs.rs` on a 2-core Zen 3 VM (Q6_K:
/// `bench/results/2026-12-07-s10-exact-down/path-costs-bench.txt`; Q4_K with its original
/// 6-bit scales: `2026-12-07-s11-q4k-copy/path-costs-bench.txt`).
const EXACT_Q4_K_576: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.23, 0.48),
    (0.32, 0.65),
    (0.50, 0.93),
    (0.67, 1.08),
    (0.84, 1.10),
]);
const EXACT_Q4_K_4096: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.23, 0.37),
    (0.32, 0.46),
    (0.49, 0.62),
    (0.67, 0.80),
    (0.85, 0.95),
]);
const EXACT_Q6_K_576: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.17, 0.38),
    (0.27, 0.48),
    (0.45, 0.75),
    (0.63, 0.97),
    (0.81, 1.13),
]);
const EXACT_Q6_K_4096: TimeCurve = TimeCurve::new(&[
    (0.0, 0.0),
    (0.17, 0.32),
    (0.27, 0.40),
    (0.45, 0.54),
    (0.63, 0.67),
    (0.81, 0.92),
]);
const Q8_0_COPY_576: TimeCurve = TimeCurve::new(&[(0.0, 0.0), (1.0, 1.6)]);
const Q8_0_COPY_4096: TimeCurve = TimeCurve::new(&[(0.0, 0.0), (1.0, 1.2)]);

/// Width from which a layer takes the curves measured at 4096.
const WIDE: usize = 2048;

/// The time curves of this process's kernels for a layer of width `n_embd`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathCosts {
    pub gathered_rows: TimeCurve,
    pub input_major: TimeCurve,
    pub exact_q4_k_down: TimeCurve,
    pub exact_q6_k_down: TimeCurve,
    pub requantized_q8_0_down: TimeCurve,
    /// Path classes never taken, whatever their curves say: those that decoded slower on
    /// with them than without in `ghost tune`'s check ([`check::tune_in_decode`]).
    pub off: PathSet,
}

/// A way of computing part of a sparse FFN step other than the dense kernels, as a class
/// that decode can be told never to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathClass {
    /// The selected rows of gate/up read one by one (`RowsPath::Gathered`).
    GatheredRows,
    /// The input-major copy of gate/up over the kept input columns.
    InputMajor,
    /// An exact neuron-major copy of `ffn_down` (Q4_K or Q6_K) over the active neurons.
    ExactDown,
    /// A requantized neuron-major copy of `ffn_down` over the active neurons.
    RequantizedDown,
}

impl PathClass {
    pub const ALL: [PathClass; 4] = [
        PathClass::GatheredRows,
        PathClass::InputMajor,
        PathClass::ExactDown,
        PathClass::RequantizedDown,
    ];

    /// The class's name in cache files and messages.
    pub fn name(self) -> &'static str {
        match self {
            PathClass::GatheredRows => "gathered_rows",
            PathClass::InputMajor => "input_major",
            PathClass::ExactDown => "exact_down",
            PathClass::RequantizedDown => "requantized_down",
        }
    }

    pub fn from_name(name: &str) -> Option<PathClass> {
        PathClass::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`PathClass`]es.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathSet(u8);

impl PathSet {
    pub const EMPTY: PathSet = PathSet(0);

    pub fn contains(self, c: PathClass) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn with(self, c: PathClass) -> PathSet {
        PathSet(self.0 | c.bit())
    }

    pub fn insert(&mut self, c: PathClass) {
        self.0 |= c.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The classes in the set, in [`PathClass::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = PathClass> {
        PathClass::ALL
            .into_iter()
            .filter(move |&c| self.contains(c))
    }
}

/// Curves installed by [`install_tuned`]: per layer width and worker count (the same
/// kernels split over more threads do not scale alike: on a 2-core AVX2 VM the input-major
/// copy paid at 1 thread and decoded 0.87× the dense speed at 2).
static TUNED: RwLock<Vec<((usize, usize), PathCosts)>> = RwLock::new(Vec::new());

/// Use `costs` for the fastest-path choice of every layer of width `n_embd` computed by
/// `n_threads` workers in this process (replacing earlier ones for that width and count).
pub fn install_tuned(n_embd: usize, n_threads: usize, costs: PathCosts) {
    let mut t = TUNED.write().unwrap_or_else(|e| e.into_inner());
    t.retain(|(k, _)| *k != (n_embd, n_threads));
    t.push(((n_embd, n_threads), costs));
}

/// Forget the curves installed for width `n_embd` at `n_threads` workers: the built-in ones
/// serve again.
pub fn clear_tuned(n_embd: usize, n_threads: usize) {
    let mut t = TUNED.write().unwrap_or_else(|e| e.into_inner());
    t.retain(|(k, _)| *k != (n_embd, n_threads));
}

/// The curves installed for width `n_embd` at `n_threads` workers, if any.
pub fn tuned(n_embd: usize, n_threads: usize) -> Option<PathCosts> {
    let t = TUNED.read().unwrap_or_else(|e| e.into_inner());
    t.iter()
        .find(|(k, _)| *k == (n_embd, n_threads))
        .map(|(_, c)| *c)
}

impl PathCosts {
    /// Time proportional to bytes on every path: the path reading the fewest bytes wins.
    pub const BYTES: PathCosts = PathCosts {
        gathered_rows: TimeCurve::BYTES,
        input_major: TimeCurve::BYTES,
        exact_q4_k_down: TimeCurve::BYTES,
        exact_q6_k_down: TimeCurve::BYTES,
        requantized_q8_0_down: TimeCurve::BYTES,
        off: PathSet::EMPTY,
    };

    /// The curves a layer of width `n_embd` computed by `n_threads` workers is priced by:
    /// those tuned on this CPU and installed ([`install_tuned`]), else the built-in ones
    /// ([`Self::builtin`]).
    pub fn of_this_process(n_embd: usize, n_threads: usize) -> Self {
        match InputMajorKernel::best() {
            InputMajorKernel::Scalar => PathCosts::BYTES,
            _ => tuned(n_embd, n_threads).unwrap_or_else(|| PathCosts::builtin(n_embd, n_threads)),
        }
    }

    /// These curves with `class` never taken.
    pub fn without(mut self, class: PathClass) -> Self {
        self.off.insert(class);
        self
    }

    /// The built-in curves for a layer of width `n_embd` computed by `n_threads` workers
    /// (measured on the VMs of this module's documentation; bytes alone for the scalar
    /// kernels).
    pub fn builtin(n_embd: usize, n_threads: usize) -> Self {
        let wide = n_embd >= WIDE;
        let kernel = InputMajorKernel::best();
        match kernel {
            InputMajorKernel::Vnni | InputMajorKernel::Avx2 => PathCosts {
                gathered_rows: GATHERED_ROWS,
                input_major: if kernel == InputMajorKernel::Avx2 && n_threads > 1 {
                    INPUT_MAJOR_AVX2_THREADS
                } else {
                    INPUT_MAJOR
                },
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
                off: PathSet::EMPTY,
            },
            InputMajorKernel::Scalar => PathCosts::BYTES,
        }
    }

    /// Reading `n_rows` of a matrix's `n_all` rows: all rows in order cost 1.
    pub fn gathered_rows(&self, n_rows: usize, n_all: usize) -> f64 {
        if n_rows >= n_all {
            1.0
        } else if self.off.contains(PathClass::GatheredRows) {
            f64::INFINITY
        } else {
            self.gathered_rows.at(share(n_rows, n_all))
        }
    }

    /// The input-major copy reading `bytes` of a matrix of `all` bytes.
    pub fn input_major(&self, bytes: usize, all: usize) -> f64 {
        if self.off.contains(PathClass::InputMajor) {
            return f64::INFINITY;
        }
        self.input_major.at(share(bytes, all))
    }

    /// An exact down copy reading `bytes` of a dense down of `all` bytes.
    pub fn exact_down(&self, e: &ExactDown, bytes: usize, all: usize) -> f64 {
        if self.off.contains(PathClass::ExactDown) {
            return f64::INFINITY;
        }
        self.exact_down_curve(e.source_type())
            .map_or(1.0, |c| c.at(share(bytes, all)))
    }

    /// The curve of the exact copy of a `ty` down (`None`: no exact copy of that type).
    pub fn exact_down_curve(&self, ty: GgmlType) -> Option<&TimeCurve> {
        match ty {
            GgmlType::Q4_K => Some(&self.exact_q4_k_down),
            GgmlType::Q6_K => Some(&self.exact_q6_k_down),
            _ => None,
        }
    }

    /// [`Self::exact_down_curve`], to replace it.
    pub fn exact_down_curve_mut(&mut self, ty: GgmlType) -> Option<&mut TimeCurve> {
        match ty {
            GgmlType::Q4_K => Some(&mut self.exact_q4_k_down),
            GgmlType::Q6_K => Some(&mut self.exact_q6_k_down),
            _ => None,
        }
    }

    /// A requantized down copy of type `ty` reading `bytes`, against a dense down of `all`
    /// bytes. The curve is measured for Q8_0, the default copy type. The copies' axpy kernels
    /// dequantize every weight to f32 and multiply-add it, so their time follows the weights
    /// they read, not the bytes: a row of another quantized type costs what a Q8_0 row of
    /// the same width costs. F16/F32 copies, and every copy under the fewest-bytes policy,
    /// are priced by their bytes. Pricing coarser types by bytes alone chose a Q3_K coarse
    /// copy for half the active neurons of a Llama-8B shape, which decoded 0.81× the dense
    /// speed where the exact copy alone decodes 1.13×
    /// (`bench/results/2026-12-07-s16-gather-bandwidth.md`).
    pub fn requantized_down(&self, ty: GgmlType, bytes: usize, all: usize) -> f64 {
        if self.off.contains(PathClass::RequantizedDown) {
            return f64::INFINITY;
        }
        let curve = self.requantized_q8_0_down;
        if curve == TimeCurve::BYTES || matches!(ty, GgmlType::F32 | GgmlType::F16) {
            // The fewest-bytes policy (and the scalar kernels) price every path by its bytes.
            return TimeCurve::BYTES.at(share(bytes, all));
        }
        curve.at(share(bytes, all) * q8_0_bytes_per_byte(ty))
    }
}

/// Bytes a Q8_0 row takes per byte of a `ty` row of the same width.
fn q8_0_bytes_per_byte(ty: GgmlType) -> f64 {
    const WIDTH: u64 = 256; // a multiple of every block size
    match (GgmlType::Q8_0.row_bytes(WIDTH), ty.row_bytes(WIDTH)) {
        (Some(q8), Some(t)) if t > 0 => q8 as f64 / t as f64,
        _ => 1.0,
    }
}

fn share(part: usize, all: usize) -> f64 {
    part as f64 / all.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A requantized copy's rows cost what Q8_0 rows of the same width cost: its axpy time
    /// follows the weights it reads, not its bytes. F16 is priced by its bytes.
    #[test]
    fn requantized_rows_cost_their_weights_not_their_bytes() {
        // The built-in curve of an AVX2 CPU, whatever this one has.
        let costs = PathCosts {
            requantized_q8_0_down: Q8_0_COPY_4096,
            ..PathCosts::BYTES
        };
        let (width, rows, all_rows) = (4096u64, 1000, 14336);
        let row = |ty: GgmlType| ty.row_bytes(width).unwrap() as usize;
        let dense = all_rows * row(GgmlType::Q6_K);
        let q8 = costs.requantized_down(GgmlType::Q8_0, rows * row(GgmlType::Q8_0), dense);
        for ty in [
            GgmlType::Q3_K,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q5_0,
        ] {
            let c = costs.requantized_down(ty, rows * row(ty), dense);
            assert!((c - q8).abs() < 1e-9, "{ty}: {c} against Q8_0's {q8}");
        }
        let f16 = rows * row(GgmlType::F16);
        assert_eq!(
            costs.requantized_down(GgmlType::F16, f16, dense),
            f16 as f64 / dense as f64
        );
        // The fewest-bytes policy prices every copy by its bytes.
        let q3 = rows * row(GgmlType::Q3_K);
        assert_eq!(
            PathCosts::BYTES.requantized_down(GgmlType::Q3_K, q3, dense),
            q3 as f64 / dense as f64
        );
        assert_eq!(
            costs
                .without(PathClass::RequantizedDown)
                .requantized_down(GgmlType::Q3_K, 1, dense),
            f64::INFINITY
        );
    }

    #[test]
    fn curves_interpolate_and_extend() {
        let c = TimeCurve::new(&[(0.0, 0.0), (0.5, 1.0), (1.0, 1.5)]);
        assert_eq!(c.points().len(), 3);
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
            TimeCurve::BYTES,
            GATHERED_ROWS,
            INPUT_MAJOR,
            EXACT_Q4_K_576,
            EXACT_Q4_K_4096,
            EXACT_Q6_K_576,
            EXACT_Q6_K_4096,
            Q8_0_COPY_576,
            Q8_0_COPY_4096,
        ] {
            assert_eq!(c.points()[0], (0.0, 0.0));
            for w in c.points().windows(2) {
                assert!(w[1].0 > w[0].0 && w[1].1 > w[0].1, "{c:?}");
            }
        }
    }

    #[test]
    fn measured_points_become_a_rising_curve_from_zero() {
        let c =
            TimeCurve::from_measured(&[(0.8, 0.9), (0.2, 0.3), (0.6, 0.95), (0.4, 0.5)]).unwrap();
        assert_eq!(
            c.points(),
            &[(0.0, 0.0), (0.2, 0.3), (0.4, 0.5), (0.6, 0.95), (0.8, 0.95)],
            "sorted, (0, 0) first, a lower later median raised to the one before"
        );
        for bad in [
            &[][..],
            &[(0.0, 0.1)],
            &[(0.5, f64::NAN)],
            &[(0.5, -0.1)],
            &[(2.0, 1.0)],
            &[(0.5, 0.4), (0.5, 0.6)],
            &[(0.1, 0.1); TimeCurve::MAX_POINTS],
        ] {
            assert_eq!(TimeCurve::from_measured(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn installed_curves_replace_the_builtin_ones_for_their_width() {
        // A width no other test installs; the state is process-wide.
        let width = 4321;
        let mut costs = PathCosts::builtin(width, 1);
        costs.gathered_rows = TimeCurve::from_measured(&[(0.5, 0.25), (1.0, 0.5)]).unwrap();
        install_tuned(width, 2, costs);
        assert_eq!(tuned(width, 2), Some(costs));
        assert_eq!(tuned(width, 1), None, "installed for 2 workers only");
        if InputMajorKernel::best() != InputMajorKernel::Scalar {
            let p = PathCosts::of_this_process(width, 2);
            assert!((p.gathered_rows(5, 10) - 0.25).abs() < 1e-12);
            assert_eq!(
                p.gathered_rows(10, 10),
                1.0,
                "all rows in order stay the unit"
            );
        }
        assert_eq!(tuned(width + 1, 2), None);
        clear_tuned(width, 2);
        assert_eq!(tuned(width, 2), None);
        assert_eq!(
            PathCosts::of_this_process(width, 2),
            PathCosts::of_this_process(width + 1, 2)
        );
    }

    #[test]
    fn builtin_input_major_curve_follows_the_kernel_and_thread_count() {
        let (one, two) = (PathCosts::builtin(576, 1), PathCosts::builtin(576, 2));
        match InputMajorKernel::best() {
            // AVX2 without VNNI: cheaper than the rows at 10% of the input dropped with one
            // worker, dearer with two.
            InputMajorKernel::Avx2 => {
                assert!(one.input_major(91, 100) < 1.0, "{one:?}");
                assert!(two.input_major(91, 100) > 1.0, "{two:?}");
                assert_eq!(two, PathCosts::builtin(576, 16));
            }
            InputMajorKernel::Vnni | InputMajorKernel::Scalar => assert_eq!(one, two),
        }
        assert_eq!(one.exact_q6_k_down, two.exact_q6_k_down);
    }

    #[test]
    fn paths_turned_off_are_never_cheaper() {
        let on = PathCosts::builtin(576, 1);
        let e = ExactDown::from_down(
            GgmlType::Q4_K,
            32,
            256,
            &crate::quant::random::random_tensor(
                GgmlType::Q4_K,
                32 * 256,
                &mut crate::sampling::Rng::new(3),
            )
            .unwrap(),
        )
        .unwrap();
        let all = PathClass::ALL.into_iter().fold(on, PathCosts::without);
        for c in PathClass::ALL {
            assert!(all.off.contains(c));
            assert_eq!(PathClass::from_name(c.name()), Some(c));
        }
        assert_eq!(all.off.iter().count(), 4);
        assert!(all.gathered_rows(1, 10).is_infinite());
        assert_eq!(
            all.gathered_rows(10, 10),
            1.0,
            "all rows in order stay the unit"
        );
        assert!(all.input_major(1, 100).is_infinite());
        assert!(all.exact_down(&e, 1, 100).is_infinite());
        assert!(all.requantized_down(GgmlType::Q8_0, 1, 100).is_infinite());
        let one = on.without(PathClass::InputMajor);
        assert!(one.input_major(1, 100).is_infinite());
        assert_eq!(one.gathered_rows(1, 10), on.gathered_rows(1, 10));
        assert_eq!(on.off, PathSet::EMPTY);
    }

    #[test]
    fn all_rows_in_order_cost_the_dense_time() {
        let p = PathCosts::builtin(576, 1);
        assert_eq!(p.gathered_rows(10, 10), 1.0);
        // From memory, a walk over most rows with gaps is no faster than all rows.
        if InputMajorKernel::best() != InputMajorKernel::Scalar {
            assert!(p.gathered_rows(8, 10) >= 1.0);
            assert!(p.gathered_rows(2, 10) < 0.5);
        }
    }
}
