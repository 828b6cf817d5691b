//! The row-packed sparse FFN used at decode:
//! optional input mask (TEAL: small FFN-input entries zeroed) → gate (dense, over live rows,
//! or over the kept input columns through the input-major copy) → activation → compact list
//! of active neurons → up over active rows only (or over the kept columns) → down as
//! Σ h_j · `down_t[j]` over active neurons (neuron-major copy).
//!
//! Gate and up each take whichever is fastest for the step (`PathCosts`: measured time
//! against the share of bytes read): all rows in order, the selected rows (live or
//! first-stage neurons) gathered, or, with an input mask, the input-major copy
//! ([`InputMajorQ5_0`], every neuron over the kept columns); the two savings do not
//! multiply. From memory a walk over most rows with gaps is no faster than all rows, so a
//! mild skip reads every row. The bytes reported are those the chosen path reads. Without
//! the copy a masked input saves no bytes.
//!
//! The down projection takes, per token, whichever way is fastest by the same measure
//! (`PathCosts`): the exact neuron-major copy of a Q4_K or Q6_K
//! down ([`ExactDown`], the model's own quants), the requantized neuron-major copy (Q8_0 axpy)
//! over active neurons, or the model's own output-major `ffn_down` with the skipped
//! activations set to zero. Copies are used only when
//! neurons were skipped, so a sparse plan whose thresholds are all zero runs exactly the dense
//! kernels and gives exactly the dense result.
//!
//! The gathered rows (up, copies) are prefetched in software a few rows ahead: they are
//! scattered, so the hardware prefetcher does not fetch them, and on a model larger than the
//! cache each would otherwise cost a memory latency.

use super::exact_down::{ExactDown, ExactDownScratch};
use super::input_major::{InputMajorQ5_0, InputMajorScratch};
use super::path_costs::{PathClass, PathCosts, PathSet};
use super::rows::{axpy_rows, matvec_rows, quantize_input, QMatrix, Splitter};
use crate::{bail, Result};

/// The FFN's gate nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x·σ(x) (Llama, SmolLM2, Qwen).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

impl Activation {
    /// The same functions as the dense forward pass (bit-identical results).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => crate::backend::cpu::ops::silu(x),
            Activation::GeluTanh => crate::backend::cpu::ops::gelu_tanh(x),
        }
    }

    /// [`Self::apply`] to every value in place.
    pub fn apply_all(self, v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = self.apply(*x));
    }
}

/// One FFN layer's weights. `gate`/`up`: `n_ff` rows of `n_embd`; `down`: `n_embd` rows of
/// `n_ff` (GGUF layout); `down_t`: optional neuron-major copy, `n_ff` rows of `n_embd`.
#[derive(Clone, Copy, Debug)]
pub struct FfnWeights<'a> {
    pub gate: QMatrix<'a>,
    pub up: QMatrix<'a>,
    pub down: QMatrix<'a>,
    pub down_t: Option<QMatrix<'a>>,
    /// Optional exact neuron-major copy of a Q4_K or Q6_K down (preferred over `down_t`
    /// when it reads fewer bytes).
    pub down_exact: Option<&'a ExactDown>,
    /// Optional exact input-major copies of Q5_0 gate and up: with input sparsity, used
    /// where they cost less than the rows (they skip the zeroed inputs' columns).
    pub gate_in: Option<&'a InputMajorQ5_0>,
    pub up_in: Option<&'a InputMajorQ5_0>,
    /// Optional coarser neuron-major copy of the down (requantized to fewer bits than the
    /// exact copy): with `coarse:S`, the active neurons of smallest product read their down
    /// row from it.
    pub down_coarse: Option<QMatrix<'a>>,
    pub act: Activation,
}

impl<'a> FfnWeights<'a> {
    pub fn new(
        gate: QMatrix<'a>,
        up: QMatrix<'a>,
        down: QMatrix<'a>,
        down_t: Option<QMatrix<'a>>,
        act: Activation,
    ) -> Result<Self> {
        let (n_ff, n_embd) = (gate.n_rows, gate.n_cols);
        if up.n_rows != n_ff || up.n_cols != n_embd || down.n_rows != n_embd || down.n_cols != n_ff
        {
            bail!(
                Format,
                "FFN shapes disagree: gate {n_ff}×{n_embd}, up {}×{}, down {}×{}",
                up.n_rows,
                up.n_cols,
                down.n_rows,
                down.n_cols
            );
        }
        if let Some(t) = down_t {
            if t.n_rows != n_ff || t.n_cols != n_embd {
                bail!(
                    Format,
                    "neuron-major down copy is {}×{}, expected {n_ff}×{n_embd}",
                    t.n_rows,
                    t.n_cols
                );
            }
        }
        Ok(FfnWeights {
            gate,
            up,
            down,
            down_t,
            down_exact: None,
            gate_in: None,
            up_in: None,
            down_coarse: None,
            act,
        })
    }

    /// Add the coarse neuron-major copy of the down (`n_ff` rows of `n_embd`).
    pub fn with_coarse_down(mut self, c: QMatrix<'a>) -> Result<Self> {
        if c.n_rows != self.n_ff() || c.n_cols != self.n_embd() {
            bail!(
                Format,
                "coarse down copy is {}×{}, expected {}×{}",
                c.n_rows,
                c.n_cols,
                self.n_ff(),
                self.n_embd()
            );
        }
        self.down_coarse = Some(c);
        Ok(self)
    }

    /// Add input-major copies of gate and/or up.
    pub fn with_input_major(
        mut self,
        gate: Option<&'a InputMajorQ5_0>,
        up: Option<&'a InputMajorQ5_0>,
    ) -> Result<Self> {
        for (what, c, m) in [("gate", gate, &self.gate), ("up", up, &self.up)] {
            if let Some(c) = c {
                if m.ty != crate::quant::GgmlType::Q5_0 {
                    bail!(
                        Format,
                        "input-major {what} copy is Q5_0, the {what} matrix {}",
                        m.ty
                    );
                }
                if c.n_rows() != m.n_rows || c.n_cols() != m.n_cols {
                    bail!(
                        Format,
                        "input-major {what} copy is {}×{}, expected {}×{}",
                        c.n_rows(),
                        c.n_cols(),
                        m.n_rows,
                        m.n_cols
                    );
                }
            }
        }
        self.gate_in = gate;
        self.up_in = up;
        Ok(self)
    }

    /// Add the exact neuron-major copy of the down.
    pub fn with_exact_down(mut self, e: &'a ExactDown) -> Result<Self> {
        if e.source_type() != self.down.ty {
            bail!(
                Format,
                "exact down copy of a {} ffn_down for a {} one",
                e.source_type(),
                self.down.ty
            );
        }
        if e.n_ff() != self.n_ff() || e.n_embd() != self.n_embd() {
            bail!(
                Format,
                "exact down copy is {}×{}, expected {}×{}",
                e.n_ff(),
                e.n_embd(),
                self.n_ff(),
                self.n_embd()
            );
        }
        self.down_exact = Some(e);
        Ok(self)
    }

    pub fn n_ff(&self) -> usize {
        self.gate.n_rows
    }

    pub fn n_embd(&self) -> usize {
        self.gate.n_cols
    }

    /// Bytes one dense FFN step reads.
    pub fn dense_bytes(&self) -> usize {
        self.gate.total_bytes() + self.up.total_bytes() + self.down.total_bytes()
    }
}

/// How one layer chooses its active neurons for a token.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerRule {
    /// Every live neuron.
    Dense,
    /// Skip up and down where |act(gate·x)| ≤ t.
    Act(f32),
    /// Skip up and down where |act(gate·x)|·scale_j ≤ t (scale: calibrated mean |up·x|).
    Scaled { t: f32, scale: Vec<f32> },
    /// Dense up; skip down where |act·up| ≤ t.
    Product(f32),
    /// Skip up and down where |act| ≤ t_act, then down where |act·up| ≤ t_prod.
    Cascade { t_act: f32, t_prod: f32 },
    /// Skip up and down where |act|·scale_j ≤ t, then down where |act·up| ≤ t_prod.
    ScaledCascade {
        t: f32,
        scale: Vec<f32>,
        t_prod: f32,
    },
    /// Skip up and down where |act| ≤ mean + k·σ of |act| over this token's live neurons.
    Stat(f32),
    /// Up first: dense up; skip gate and down where |up·x|·scale_j ≤ t (scale: calibrated
    /// mean |act(gate·x)|), then down where |act·up| ≤ t_prod (< 0: no second stage).
    UpFirst {
        t: f32,
        scale: Vec<f32>,
        t_prod: f32,
    },
}

/// Which down projection a step uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DownPath {
    /// Whichever reads fewer bytes for this token's active set.
    #[default]
    Auto,
    /// Always the neuron-major copy (measures what its requantization costs).
    NeuronMajor,
    /// Always the model's own `ffn_down`, skipped activations set to zero.
    Dense,
}

/// How a step chooses between the ways of computing each projection (all rows, gathered
/// rows, input-major copy; dense down, exact copy, requantized copy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathPolicy {
    /// The fastest way on this CPU by its measured time curves (`PathCosts`): what decode
    /// wants. The bytes skipped then depend on the CPU.
    #[default]
    Fastest,
    /// The way that reads the fewest bytes: the CPU-independent figure that compares
    /// sparsity settings (calibration ranks its budget candidates by it).
    FewestBytes,
}

impl std::str::FromStr for PathPolicy {
    type Err = crate::Error;

    /// `fastest` or `bytes`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fastest" => Ok(PathPolicy::Fastest),
            "bytes" => Ok(PathPolicy::FewestBytes),
            other => bail!(
                InvalidArgument,
                "unknown path policy {other:?} (fastest or bytes)"
            ),
        }
    }
}

/// One layer's plan: the live neurons (dead ones removed), the input threshold, the rule,
/// the down path, the path policy.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Sorted live neuron ids; `None` when no neuron is dead (no gather cost at all).
    pub live: Option<Vec<u32>>,
    /// TEAL: FFN-input entries with |x_i| ≤ t are zeroed before the gate and up matvecs,
    /// which then skip those columns; the rule applies to the masked input's neurons.
    pub input: Option<f32>,
    pub rule: LayerRule,
    /// Coarse down rows: an active neuron with |act·up| ≤ t reads its down row from the
    /// coarse copy (`FfnWeights::down_coarse`), where that copy and the exact one are used.
    pub coarse: Option<f32>,
    pub down: DownPath,
    pub paths: PathPolicy,
}

impl LayerPlan {
    pub const DENSE: LayerPlan = LayerPlan {
        live: None,
        input: None,
        rule: LayerRule::Dense,
        coarse: None,
        down: DownPath::Auto,
        paths: PathPolicy::Fastest,
    };

    pub fn new(live: Option<Vec<u32>>, rule: LayerRule) -> Self {
        LayerPlan {
            live,
            input: None,
            rule,
            coarse: None,
            down: DownPath::Auto,
            paths: PathPolicy::Fastest,
        }
    }

    /// The same plan with path policy `paths`.
    pub fn with_paths(mut self, paths: PathPolicy) -> Self {
        self.paths = paths;
        self
    }

    /// The same plan with input entries |x_i| ≤ `t` zeroed first.
    pub fn with_input(mut self, t: Option<f32>) -> Self {
        self.input = t;
        self
    }

    /// The same plan with coarse down rows for active neurons with |act·up| ≤ `t`.
    pub fn with_coarse(mut self, t: Option<f32>) -> Self {
        self.coarse = t;
        self
    }

    /// Live list from a dead mask; `None` when nothing is dead.
    pub fn live_from_dead(dead: &[bool]) -> Option<Vec<u32>> {
        if dead.iter().any(|&d| d) {
            Some(
                dead.iter()
                    .enumerate()
                    .filter(|(_, &d)| !d)
                    .map(|(j, _)| j as u32)
                    .collect(),
            )
        } else {
            None
        }
    }
}

/// What one sparse FFN step did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FfnStepStats {
    pub n_ff: usize,
    /// Neurons whose down row contributed.
    pub n_active: usize,
    /// Neurons whose second projection was computed: the up row (gate first), or the gate row
    /// of an up-first rule.
    pub n_up: usize,
    /// Neurons whose down row came from the coarse copy (counted in `n_active`).
    pub n_coarse: usize,
    /// Weight bytes read (gate + up + down, including the down copy when used).
    pub bytes_read: usize,
    /// Weight bytes a dense step reads.
    pub bytes_dense: usize,
    /// The sparse paths the step took (empty: the dense kernels only).
    pub paths: PathSet,
}

impl FfnStepStats {
    /// Share of neurons whose down contribution was skipped.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.n_active as f64 / self.n_ff.max(1) as f64
    }

    /// Share of FFN weight bytes not read.
    pub fn bytes_skipped(&self) -> f64 {
        1.0 - self.bytes_read as f64 / self.bytes_dense.max(1) as f64
    }
}

/// Reusable buffers for [`sparse_ffn`].
#[derive(Default, Debug)]
pub struct FfnScratch {
    /// The quantized FFN input, masked when input entries were dropped.
    xq: Vec<u8>,
    /// The quantized exact (unmasked) input, when entries were dropped: what a projection
    /// that reads all its columns uses, since skipping columns saves it nothing.
    xq_exact: Vec<u8>,
    partials: Vec<Vec<f32>>,
    x_masked: Vec<f32>,
    /// The first projection's values: `act(gate·x)`, or `up·x` for an up-first rule.
    first: Vec<f32>,
    /// The second projection's values (over the neurons stage one kept): `up·x`, or
    /// `act(gate·x)` for an up-first rule.
    second: Vec<f32>,
    ids: Vec<u32>,
    coefs: Vec<f32>,
    h_dense: Vec<f32>,
    /// Per neuron: kept by the first stage (the all-rows step).
    keep: Vec<bool>,
    accs: Vec<ExactDownScratch>,
    /// The coarse neurons' ids and products, and their down sum.
    coarse_ids: Vec<u32>,
    coarse_coefs: Vec<f32>,
    coarse_out: Vec<f32>,
    /// The other active neurons (exact down rows) when coarse rows are used.
    fine_ids: Vec<u32>,
    fine_coefs: Vec<f32>,
    all_rows: Vec<f32>,
    input_major: InputMajorScratch,
}

impl FfnScratch {
    /// After a step with [`LayerPlan::DENSE`]: `act(gate·x)` and `up·x` of every neuron.
    pub fn dense_act_up(&self) -> (&[f32], &[f32]) {
        (&self.first, &self.second)
    }
}

/// Run one layer's FFN on the (normed) input `x`, writing `out` (len `n_embd`).
pub fn sparse_ffn(
    w: &FfnWeights,
    plan: &LayerPlan,
    x: &[f32],
    scratch: &mut FfnScratch,
    exec: &dyn Splitter,
    out: &mut [f32],
) -> Result<FfnStepStats> {
    let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
    if x.len() != n_embd || out.len() != n_embd {
        bail!(
            InvalidArgument,
            "FFN input {} / output {} for n_embd {n_embd}",
            x.len(),
            out.len()
        );
    }
    let mut stats = FfnStepStats {
        n_ff,
        bytes_dense: w.dense_bytes(),
        ..Default::default()
    };
    let s = scratch;

    // 1. Input (TEAL): zero small entries; where an input-major copy costs less, the gate
    //    and up matvecs then skip those columns. A projection computed another way reads
    //    every column anyway, so it gets the exact input (`x_exact`): the dropped entries
    //    cost quality only where they save bytes. When no entry is dropped, the input and
    //    every kernel stay those of the dense path.
    let x_exact = x;
    let mut dropped = false;
    let x: &[f32] = if let Some(t) = plan.input {
        s.x_masked.clear();
        s.x_masked.extend(x.iter().map(|&v| {
            let drop = v.abs() <= t && v != 0.0;
            dropped |= drop;
            if drop {
                0.0
            } else {
                v
            }
        }));
        &s.x_masked
    } else {
        x
    };

    // 2. The first projection over the live neurons: the gate, then the activation in place;
    //    or, for an up-first rule, the up (the activation then applies to the gate values
    //    computed second). `s.first` holds the first projection, `s.second` the second.
    let up_first = matches!(plan.rule, LayerRule::UpFirst { .. });
    let (first_w, first_in, second_w, second_in) = if up_first {
        (&w.up, w.up_in, &w.gate, w.gate_in)
    } else {
        (&w.gate, w.gate_in, &w.up, w.up_in)
    };
    let live: Option<&[u32]> = plan.live.as_deref();
    let n_live = live.map_or(n_ff, <[u32]>::len);
    s.first.resize(n_live, 0.0);
    quantize_inputs(first_w, x, x_exact, dropped, (&mut s.xq, &mut s.xq_exact))?;
    let costs = match plan.paths {
        PathPolicy::Fastest => PathCosts::of_this_process(n_embd, exec.n_workers()),
        PathPolicy::FewestBytes => PathCosts::BYTES,
    };
    stats.bytes_read += project_rows(
        first_w,
        live,
        (&s.xq, if dropped { &s.xq_exact } else { &s.xq }),
        input_major_bytes(first_in, dropped, &s.xq)?,
        &costs,
        (&mut s.all_rows, &mut s.input_major),
        &mut stats.paths,
        exec,
        &mut s.first,
    )?;
    if !up_first {
        w.act.apply_all(&mut s.first);
    }

    // 3. Choose the neurons whose second projection is needed (ids), then those whose down
    //    is needed.
    let act_threshold = match &plan.rule {
        LayerRule::Dense | LayerRule::Product(_) => None,
        LayerRule::Act(t) => Some(*t),
        LayerRule::Cascade { t_act, .. } => Some(*t_act),
        LayerRule::Scaled { .. } | LayerRule::ScaledCascade { .. } | LayerRule::UpFirst { .. } => {
            None
        }
        LayerRule::Stat(k) => {
            let n = s.first.len().max(1) as f64;
            let mean = s.first.iter().map(|a| a.abs() as f64).sum::<f64>() / n;
            let var = s
                .first
                .iter()
                .map(|a| (a.abs() as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            Some((mean + *k as f64 * var.sqrt()) as f32)
        }
    };
    let stage_one = match (&plan.rule, act_threshold) {
        (LayerRule::Scaled { t, scale }, _)
        | (LayerRule::ScaledCascade { t, scale, .. }, _)
        | (LayerRule::UpFirst { t, scale, .. }, _) => {
            if scale.len() != n_ff {
                bail!(
                    InvalidArgument,
                    "{} neuron scales for a layer of {n_ff} neurons",
                    scale.len()
                );
            }
            StageOne::Scaled(*t, scale)
        }
        (_, Some(t)) => StageOne::Above(t),
        (_, None) => StageOne::All,
    };
    // The second stage: product thresholds drop more down rows.
    let t_prod = match plan.rule {
        LayerRule::Product(t) => Some(t),
        LayerRule::Cascade { t_prod, .. }
        | LayerRule::ScaledCascade { t_prod, .. }
        | LayerRule::UpFirst { t_prod, .. } => Some(t_prod),
        _ => None,
    };
    let t_prod = t_prod.unwrap_or(-1.0);
    if second_w.vec_dot_type() != first_w.vec_dot_type() {
        quantize_inputs(second_w, x, x_exact, dropped, (&mut s.xq, &mut s.xq_exact))?;
    }
    let xq_exact: &[u8] = if dropped { &s.xq_exact } else { &s.xq };
    let second_copy = input_major_bytes(second_in, dropped, &s.xq)?;

    // 4–5, when every neuron is live and the second projection is fastest over all its
    //    rows (a mild first stage), in order or through the input-major copy (which
    //    computes every row anyway): the second projection over all rows, then h = act·up
    //    over every neuron in one vectorizable pass, zero where either stage drops the
    //    neuron, ready for the dense down. The id list a down copy needs is built only if a
    //    copy could be faster.
    let n_up_all = match live {
        None => {
            stage_one.mark(&s.first, &mut s.keep);
            Some(s.keep.iter().map(|&k| usize::from(k)).sum())
        }
        Some(_) => None,
    };
    let fused = n_up_all.is_some_and(|n_up| {
        let sel = n_up < n_ff;
        matches!(
            rows_path(&costs, second_w, sel, n_up, second_copy),
            RowsPath::All | RowsPath::InputMajor(..)
        )
    });
    let n_active = if let (true, Some(n_up)) = (fused, n_up_all) {
        s.second.resize(n_ff, 0.0);
        stats.bytes_read += project_rows(
            second_w,
            None,
            (&s.xq, xq_exact),
            second_copy,
            &costs,
            (&mut s.all_rows, &mut s.input_major),
            &mut stats.paths,
            exec,
            &mut s.second,
        )?;
        if up_first {
            w.act.apply_all(&mut s.second);
        }
        stats.n_up = n_up;
        s.h_dense.resize(n_ff, 0.0);
        let mut n_active = 0;
        for (((h, &a), &u), &k) in s
            .h_dense
            .iter_mut()
            .zip(&s.first)
            .zip(&s.second)
            .zip(&s.keep)
        {
            // Branch-free (`&`, a select): both tests are close to coin flips per neuron,
            // and mispredicted branches here cost ~5 µs per SmolLM2 layer, more than the
            // rows a mild setting skips.
            let v = a * u;
            let active = k & (v.abs() > t_prod);
            *h = if active { v } else { 0.0 };
            n_active += usize::from(active);
        }
        n_active
    } else {
        compact(&s.first, live, &mut s.ids, &mut s.coefs, |id, a| {
            stage_one.keeps(id as usize, a)
        });
        // 4. The second projection over the chosen rows (all rows in order when nothing was
        //    dropped: same kernel as the dense path), gathered, or over the kept input
        //    columns.
        let n_up = s.ids.len();
        s.second.resize(n_up, 0.0);
        let rows = if n_up == n_ff { None } else { Some(&s.ids[..]) };
        stats.bytes_read += project_rows(
            second_w,
            rows,
            (&s.xq, xq_exact),
            second_copy,
            &costs,
            (&mut s.all_rows, &mut s.input_major),
            &mut stats.paths,
            exec,
            &mut s.second,
        )?;
        if up_first {
            w.act.apply_all(&mut s.second);
        }
        stats.n_up = n_up;

        // 5. h = first·second (act·up); the second stage drops more down rows.
        let mut n_active = 0;
        for i in 0..n_up {
            // Branch-free compaction: the keep test is close to a coin flip per neuron, and
            // a mispredicted branch costs more than the two stores.
            let h = s.coefs[i] * s.second[i];
            s.ids[n_active] = s.ids[i];
            s.coefs[n_active] = h;
            n_active += usize::from(h.abs() > t_prod);
        }
        s.ids.truncate(n_active);
        s.coefs.truncate(n_active);
        n_active
    };
    stats.n_active = n_active;

    // 6. Down: whichever of the exact copy, the requantized copy and the dense down reads
    //    the fewest bytes. Copies are used only when neurons were skipped: at full density a
    //    copy would be a different summation (or compression), not sparsity, and the model's
    //    own down gives the dense result exactly.
    let dense_down = w.down.total_bytes();
    let skipped = n_active < n_ff;
    let forced = plan.down == DownPath::NeuronMajor;
    // The gathered branch listed the active neurons; the fused one lists them only when a
    // copy could be faster than the dense down even at a lower bound of its bytes (a copy
    // reads at least its share of the scales), and otherwise the dense down reads `h_dense`.
    let coarse_copy = w
        .down_coarse
        .zip(w.down_exact)
        .zip(plan.coarse)
        .filter(|_| plan.down == DownPath::Auto && !costs.off.contains(PathClass::RequantizedDown));
    let ids_listed = !fused
        || forced
        || coarse_copy.is_some()
        || (skipped
            && plan.down == DownPath::Auto
            && (w.down_exact.is_some_and(|e| {
                let least = e.total_bytes() * n_active / n_ff;
                costs.exact_down(e, least, dense_down) < 1.0
            }) || w.down_t.is_some_and(|t| {
                costs.requantized_down(t.ty, n_active * t.row_bytes(), dense_down) < 1.0
            })));
    if fused && ids_listed {
        // As the gathered branch lists them: kept by the first stage and above the product
        // threshold (where h was zeroed, |0| > t_prod only if every kept neuron is active).
        // Branch-free through `compact` (a branch per neuron here took a fifth of this
        // function's own time on SmolLM2).
        let keep = &s.keep;
        compact(&s.h_dense, None, &mut s.ids, &mut s.coefs, |id, h| {
            keep[id as usize] & (h.abs() > t_prod)
        });
    }
    let exact_bytes = w
        .down_exact
        .filter(|_| ids_listed && skipped && plan.down == DownPath::Auto)
        .map(|e| (e, e.bytes_for(&s.ids)));
    let copy_bytes = w
        .down_t
        .filter(|_| ids_listed)
        .and_then(|t| match plan.down {
            DownPath::NeuronMajor => Some((t, n_active * t.row_bytes())),
            DownPath::Auto if skipped => Some((t, n_active * t.row_bytes())),
            _ => None,
        });
    if forced && copy_bytes.is_none() {
        bail!(
            InvalidArgument,
            "the neuron-major down path needs the down copy"
        );
    }
    // Chosen by each path's measured time for the share of the dense down's bytes it reads
    // (see `PathCosts`; the dense down costs 1); the bytes recorded are those the chosen path
    // reads.
    let mut best = dense_down;
    let mut best_cost = 1.0;
    let mut choice = DownChoice::Dense;
    if let Some((t, b)) = copy_bytes {
        let c = costs.requantized_down(t.ty, b, dense_down);
        if forced || c < best_cost {
            (best, best_cost, choice) = (b, c, DownChoice::Copy(t));
        }
    }
    if let Some((e, b)) = exact_bytes {
        let c = costs.exact_down(e, b, dense_down);
        if !forced && c < best_cost {
            (best, best_cost, choice) = (b, c, DownChoice::Exact(e));
        }
    }
    // Coarse rows: the active neurons with |h| ≤ t read the coarse copy, the others the
    // exact one (its bytes for them only).
    if let Some(((c, e), t)) = coarse_copy {
        s.fine_ids.clear();
        s.fine_coefs.clear();
        s.coarse_ids.clear();
        s.coarse_coefs.clear();
        for (&j, &h) in s.ids.iter().zip(&s.coefs) {
            let (ids, coefs) = if h.abs() <= t {
                (&mut s.coarse_ids, &mut s.coarse_coefs)
            } else {
                (&mut s.fine_ids, &mut s.fine_coefs)
            };
            ids.push(j);
            coefs.push(h);
        }
        if !s.coarse_ids.is_empty() {
            let (fine, rough) = (e.bytes_for(&s.fine_ids), s.coarse_ids.len() * c.row_bytes());
            let cost = costs.exact_down(e, fine, dense_down)
                + costs.requantized_down(c.ty, rough, dense_down);
            if cost < best_cost {
                (best, choice) = (fine + rough, DownChoice::ExactAndCoarse(e, c));
            }
        }
    }
    match choice {
        DownChoice::Exact(e) => {
            stats.paths.insert(PathClass::ExactDown);
            exact_down_split(e, &s.ids, &s.coefs, out, exec, &mut s.partials, &mut s.accs)?;
        }
        DownChoice::ExactAndCoarse(e, c) => {
            stats.paths.insert(PathClass::ExactDown);
            stats.paths.insert(PathClass::RequantizedDown);
            stats.n_coarse = s.coarse_ids.len();
            exact_down_split(
                e,
                &s.fine_ids,
                &s.fine_coefs,
                out,
                exec,
                &mut s.partials,
                &mut s.accs,
            )?;
            s.coarse_out.resize(out.len(), 0.0);
            axpy_rows(
                &c,
                &s.coarse_ids,
                &s.coarse_coefs,
                &mut s.coarse_out,
                exec,
                &mut s.partials,
            )?;
            for (o, v) in out.iter_mut().zip(&s.coarse_out) {
                *o += v;
            }
        }
        DownChoice::Copy(dt) => {
            stats.paths.insert(PathClass::RequantizedDown);
            axpy_rows(&dt, &s.ids, &s.coefs, out, exec, &mut s.partials)?;
        }
        DownChoice::Dense => {
            // The fused branch wrote `h_dense` already.
            if !fused {
                s.h_dense.clear();
                s.h_dense.resize(n_ff, 0.0);
                for (&j, &h) in s.ids.iter().zip(&s.coefs) {
                    s.h_dense[j as usize] = h;
                }
            }
            quantize_input(&w.down, &s.h_dense, &mut s.xq)?;
            matvec_rows(&w.down, None, &s.xq, out, exec)?;
        }
    }
    stats.bytes_read += best;
    Ok(stats)
}

/// `out[k] = row sel[k] · x` (every row when `sel` is `None`) of `m`, by whichever is fastest
/// for this step (see [`PathCosts`]): all rows in order (then the selected ones picked) or the
/// selected rows gathered, over the quantized exact input `xq.1`; or the input-major copy over
/// the kept input columns of the masked input `xq.0` (`copy`: the copy and the bytes it would
/// read). Returns the bytes read.
#[allow(clippy::too_many_arguments)]
fn project_rows(
    m: &QMatrix,
    sel: Option<&[u32]>,
    (xq_masked, xq): (&[u8], &[u8]),
    copy: Option<(&InputMajorQ5_0, usize)>,
    costs: &PathCosts,
    (all_rows, im_scratch): (&mut Vec<f32>, &mut InputMajorScratch),
    taken: &mut PathSet,
    exec: &dyn Splitter,
    out: &mut [f32],
) -> Result<usize> {
    let n_all = m.n_rows;
    let n_sel = sel.map_or(n_all, <[u32]>::len);
    let all_bytes = m.total_bytes();
    let path = rows_path(costs, m, sel.is_some(), n_sel, copy);
    match (path, sel) {
        (RowsPath::All, None) => {
            matvec_rows(m, None, xq, out, exec)?;
            Ok(all_bytes)
        }
        (RowsPath::All, Some(ids)) => {
            all_rows.resize(n_all, 0.0);
            matvec_rows(m, None, xq, all_rows, exec)?;
            gather(all_rows, Some(ids), out);
            Ok(all_bytes)
        }
        (RowsPath::Gathered, _) => {
            taken.insert(PathClass::GatheredRows);
            matvec_rows(m, sel, xq, out, exec)?;
            Ok(n_sel * m.row_bytes())
        }
        (RowsPath::InputMajor(c, b), _) => {
            taken.insert(PathClass::InputMajor);
            all_rows.resize(n_all, 0.0);
            c.matvec(xq_masked, all_rows, im_scratch, exec)?;
            gather(all_rows, sel, out);
            Ok(b)
        }
    }
}

/// Which of [`project_rows`]'s ways is fastest for `n_sel` selected rows of `m` (`selected`:
/// a strict subset is wanted), with the input-major `copy` and the bytes it would read.
fn rows_path<'c>(
    costs: &PathCosts,
    m: &QMatrix,
    selected: bool,
    n_sel: usize,
    copy: Option<(&'c InputMajorQ5_0, usize)>,
) -> RowsPath<'c> {
    let (mut best, mut path) = (1.0, RowsPath::All);
    let gathered = costs.gathered_rows(n_sel, m.n_rows);
    if selected && gathered < best {
        (best, path) = (gathered, RowsPath::Gathered);
    }
    if let Some((c, b)) = copy {
        if costs.input_major(b, m.total_bytes()) < best {
            path = RowsPath::InputMajor(c, b);
        }
    }
    path
}

/// The ways [`project_rows`] can compute a projection.
#[derive(Clone, Copy)]
enum RowsPath<'c> {
    All,
    Gathered,
    InputMajor(&'c InputMajorQ5_0, usize),
}

/// The input-major copy and the bytes its matvec reads for `xq`, when input entries were
/// dropped and the copy exists.
fn input_major_bytes<'c>(
    copy: Option<&'c InputMajorQ5_0>,
    dropped: bool,
    xq: &[u8],
) -> Result<Option<(&'c InputMajorQ5_0, usize)>> {
    match copy {
        Some(c) if dropped => Ok(Some((c, c.bytes_for(xq)?))),
        _ => Ok(None),
    }
}

/// The quantized masked input into `bufs.0` and, when entries were `dropped`, the quantized
/// exact input into `bufs.1`, both for `m`'s vector-dot type.
fn quantize_inputs(
    m: &QMatrix,
    masked: &[f32],
    exact: &[f32],
    dropped: bool,
    bufs: (&mut Vec<u8>, &mut Vec<u8>),
) -> Result<()> {
    quantize_input(m, masked, bufs.0)?;
    if dropped {
        quantize_input(m, exact, bufs.1)?;
    }
    Ok(())
}

/// `out[k] = all[ids[k]]` (`out = all` when `ids` is `None`).
fn gather(all: &[f32], ids: Option<&[u32]>, out: &mut [f32]) {
    match ids {
        None => out.copy_from_slice(all),
        Some(ids) => {
            for (o, &j) in out.iter_mut().zip(ids) {
                *o = all[j as usize];
            }
        }
    }
}

/// `ids`/`coefs` := the (neuron id, activation) pairs of `gate` for which `keep(id, a)`,
/// in order; `live` maps positions of `gate` to neuron ids (identity when `None`).
fn compact(
    gate: &[f32],
    live: Option<&[u32]>,
    ids: &mut Vec<u32>,
    coefs: &mut Vec<f32>,
    keep: impl Fn(u32, f32) -> bool,
) {
    ids.resize(gate.len(), 0);
    coefs.resize(gate.len(), 0.0);
    let mut n = 0;
    for (i, &a) in gate.iter().enumerate() {
        // Branch-free, as in step 5 of `sparse_ffn`.
        let id = live.map_or(i as u32, |l| l[i]);
        ids[n] = id;
        coefs[n] = a;
        n += usize::from(keep(id, a));
    }
    ids.truncate(n);
    coefs.truncate(n);
}

/// The first stage of a rule: which neurons need their up row, from `act(gate·x)`.
enum StageOne<'p> {
    All,
    /// |a| > t.
    Above(f32),
    /// |a| · scale[id] > t.
    Scaled(f32, &'p [f32]),
}

impl StageOne<'_> {
    #[inline]
    fn keeps(&self, id: usize, a: f32) -> bool {
        match *self {
            StageOne::All => true,
            StageOne::Above(t) => a.abs() > t,
            StageOne::Scaled(t, scale) => a.abs() * scale[id] > t,
        }
    }

    /// `keep[i] = self.keeps(i, gate[i])` for every neuron (all live), one loop per rule so
    /// that each vectorizes.
    fn mark(&self, gate: &[f32], keep: &mut Vec<bool>) {
        keep.clear();
        match *self {
            StageOne::All => keep.resize(gate.len(), true),
            StageOne::Above(t) => keep.extend(gate.iter().map(|a| a.abs() > t)),
            StageOne::Scaled(t, scale) => {
                keep.extend(gate.iter().zip(scale).map(|(a, s)| a.abs() * s > t));
            }
        }
    }
}

/// Which down projection a step takes.
enum DownChoice<'a> {
    Dense,
    Copy(QMatrix<'a>),
    Exact(&'a ExactDown),
    /// The exact copy for most active neurons, the coarse copy for those of smallest |h|.
    ExactAndCoarse(&'a ExactDown, QMatrix<'a>),
}

/// `out = Σ_k coefs[k] · down[:, ids[k]]` over the exact copy, the id list split between
/// workers at group boundaries (each into its own partial sum, added in order).
pub(crate) fn exact_down_split(
    e: &ExactDown,
    ids: &[u32],
    coefs: &[f32],
    out: &mut [f32],
    exec: &dyn Splitter,
    partials: &mut Vec<Vec<f32>>,
    accs: &mut Vec<ExactDownScratch>,
) -> Result<()> {
    out.fill(0.0);
    let unit = e.split_unit() as u32;
    // At least 128 ids a task: fewer cost more in synchronization than they save.
    let n_tasks = exec.n_workers().min(ids.len().div_ceil(128)).max(1);
    accs.resize_with(n_tasks, ExactDownScratch::default);
    if n_tasks == 1 {
        return e.accumulate(ids, coefs, out, &mut accs[0]);
    }
    // Split points: near equal shares, moved forward to the next scale unit's boundary.
    let mut bounds = vec![0usize];
    for t in 1..n_tasks {
        let mut k = (ids.len() * t / n_tasks).max(*bounds.last().unwrap_or(&0));
        while k > 0 && k < ids.len() && ids[k] / unit == ids[k - 1] / unit {
            k += 1;
        }
        bounds.push(k);
    }
    bounds.push(ids.len());
    partials.resize_with(n_tasks, Vec::new);
    let n_embd = out.len();
    let slots: Vec<std::sync::Mutex<(&mut Vec<f32>, &mut ExactDownScratch)>> = partials
        .iter_mut()
        .zip(accs.iter_mut())
        .map(std::sync::Mutex::new)
        .collect();
    let err = std::sync::Mutex::new(None);
    exec.run(n_tasks, &|t: usize| {
        let mut slot = slots[t].lock().unwrap_or_else(|p| p.into_inner());
        let (p, a) = &mut *slot;
        p.clear();
        p.resize(n_embd, 0.0);
        let r = bounds[t]..bounds[t + 1];
        if let Err(x) = e.accumulate(&ids[r.clone()], &coefs[r], p, a) {
            err.lock()
                .unwrap_or_else(|q| q.into_inner())
                .get_or_insert(x);
        }
    });
    drop(slots);
    if let Some(x) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(x);
    }
    for p in partials.iter().take(n_tasks) {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    Ok(())
}

/// The dense FFN: down(act(gate·x) ⊙ up·x), the reference the sparse path is checked against.
pub fn dense_ffn(
    w: &FfnWeights,
    x: &[f32],
    scratch: &mut FfnScratch,
    exec: &dyn Splitter,
    out: &mut [f32],
) -> Result<()> {
    sparse_ffn(w, &LayerPlan::DENSE, x, scratch, exec, out).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;
    use crate::sparsity::rows::Serial;

    struct Owned {
        gate: Vec<u8>,
        up: Vec<u8>,
        down: Vec<u8>,
        down_t: Vec<u8>,
        g: Vec<f32>,
        u: Vec<f32>,
        d: Vec<f32>,
    }

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn make(n_embd: usize, n_ff: usize, seed: u64) -> Owned {
        let mut st = seed;
        let g: Vec<f32> = (0..n_ff * n_embd).map(|_| lcg(&mut st) * 0.3).collect();
        let u: Vec<f32> = (0..n_ff * n_embd).map(|_| lcg(&mut st) * 0.3).collect();
        let d: Vec<f32> = (0..n_embd * n_ff).map(|_| lcg(&mut st) * 0.3).collect();
        let mut dt = vec![0f32; n_ff * n_embd];
        for o in 0..n_embd {
            for j in 0..n_ff {
                dt[j * n_embd + o] = d[o * n_ff + j];
            }
        }
        Owned {
            gate: bytes(&g),
            up: bytes(&u),
            down: bytes(&d),
            down_t: bytes(&dt),
            g,
            u,
            d,
        }
    }

    fn weights(o: &Owned, n_embd: usize, n_ff: usize, with_t: bool) -> FfnWeights<'_> {
        let f = GgmlType::F32;
        FfnWeights::new(
            QMatrix::new(f, n_ff, n_embd, &o.gate).unwrap(),
            QMatrix::new(f, n_ff, n_embd, &o.up).unwrap(),
            QMatrix::new(f, n_embd, n_ff, &o.down).unwrap(),
            with_t.then(|| QMatrix::new(f, n_ff, n_embd, &o.down_t).unwrap()),
            Activation::Silu,
        )
        .unwrap()
    }

    /// Scalar f64 reference: skip neurons for which `keep(a, u, j)` is false.
    fn reference(
        o: &Owned,
        n_embd: usize,
        n_ff: usize,
        x: &[f32],
        keep: impl Fn(f64, f64, usize) -> bool,
    ) -> Vec<f64> {
        let mut out = vec![0f64; n_embd];
        for j in 0..n_ff {
            let gx: f64 = (0..n_embd)
                .map(|c| o.g[j * n_embd + c] as f64 * x[c] as f64)
                .sum();
            let a = gx / (1.0 + (-gx).exp());
            let ux: f64 = (0..n_embd)
                .map(|c| o.u[j * n_embd + c] as f64 * x[c] as f64)
                .sum();
            if !keep(a, ux, j) {
                continue;
            }
            for (r, ov) in out.iter_mut().enumerate() {
                *ov += o.d[r * n_ff + j] as f64 * a * ux;
            }
        }
        out
    }

    fn input(n: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        (0..n).map(|_| lcg(&mut st) * 2.0).collect()
    }

    #[test]
    fn zero_thresholds_equal_dense_exactly() {
        let (n_embd, n_ff) = (32, 96);
        let o = make(n_embd, n_ff, 1);
        let w = weights(&o, n_embd, n_ff, true);
        let mut sc = FfnScratch::default();
        for seed in 0..4 {
            let x = input(n_embd, 100 + seed);
            let mut dense = vec![0.0; n_embd];
            dense_ffn(&w, &x, &mut sc, &Serial, &mut dense).unwrap();
            for rule in [
                LayerRule::Act(0.0),
                LayerRule::Product(0.0),
                LayerRule::Cascade {
                    t_act: 0.0,
                    t_prod: 0.0,
                },
                LayerRule::Dense,
            ] {
                for input in [None, Some(0.0)] {
                    let plan = LayerPlan::new(None, rule.clone()).with_input(input);
                    let mut sparse = vec![0.0; n_embd];
                    let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut sparse).unwrap();
                    assert_eq!(sparse, dense, "{plan:?}");
                    assert_eq!(st.n_active, n_ff);
                    assert_eq!(st.bytes_skipped(), 0.0);
                }
            }
            // And dense agrees with the independent f64 reference.
            let r = reference(&o, n_embd, n_ff, &x, |_, _, _| true);
            for (a, b) in dense.iter().zip(&r) {
                assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    /// The path policy changes which kernels run, never the result. A mild skip (90% of the
    /// up rows kept) reads every up row when the fastest path is wanted (from memory a walk
    /// over most rows with gaps is no faster than all rows) and only the kept rows when the
    /// fewest bytes are.
    #[test]
    fn path_policies_agree_and_a_mild_skip_reads_all_rows_when_fastest() {
        let (n_embd, n_ff) = (32, 96);
        let o = make(n_embd, n_ff, 5);
        let w = weights(&o, n_embd, n_ff, false);
        let x = input(n_embd, 7);
        let mut sc = FfnScratch::default();
        let mut out = vec![0.0; n_embd];
        sparse_ffn(&w, &LayerPlan::DENSE, &x, &mut sc, &Serial, &mut out).unwrap();
        let mut a: Vec<f32> = sc.dense_act_up().0.iter().map(|v| v.abs()).collect();
        a.sort_by(f32::total_cmp);
        let plan = LayerPlan::new(None, LayerRule::Act(a[n_ff / 10]));
        let run = |paths: PathPolicy, sc: &mut FfnScratch| {
            let mut out = vec![0.0; n_embd];
            let plan = plan.clone().with_paths(paths);
            let st = sparse_ffn(&w, &plan, &x, sc, &Serial, &mut out).unwrap();
            (out, st)
        };
        let (fast, st_fast) = run(PathPolicy::Fastest, &mut sc);
        let (few, st_few) = run(PathPolicy::FewestBytes, &mut sc);
        assert_eq!(fast, few);
        assert_eq!(st_fast.n_up, st_few.n_up);
        assert!(
            st_few.n_up < n_ff && st_few.n_up >= n_ff * 8 / 10,
            "{st_few:?}"
        );
        let skipped_up = (n_ff - st_few.n_up) * w.up.row_bytes();
        if super::super::input_major::InputMajorKernel::best()
            == super::super::input_major::InputMajorKernel::Scalar
        {
            // Unmeasured scalar kernels: bytes alone decide under both policies.
            assert_eq!(st_fast.bytes_read, st_few.bytes_read);
        } else {
            assert_eq!(st_fast.bytes_read, st_few.bytes_read + skipped_up);
        }
        assert_eq!(st_few.bytes_read + skipped_up, w.dense_bytes());

        // A mild first stage and a strict second one, with a neuron-major down copy: the
        // fastest path reads every up row and builds the id list only for the copy, which
        // reads far fewer bytes than the dense down; the same result as the gathered path.
        let w = weights(&o, n_embd, n_ff, true);
        let (act, up) = {
            sparse_ffn(&w, &LayerPlan::DENSE, &x, &mut sc, &Serial, &mut out).unwrap();
            let (a, u) = sc.dense_act_up();
            (a.to_vec(), u.to_vec())
        };
        let mut h: Vec<f32> = act.iter().zip(&up).map(|(a, u)| (a * u).abs()).collect();
        h.sort_by(f32::total_cmp);
        // Thresholds between two neurons' values, so that the f64 reference keeps the same
        // neurons.
        let mid = |v: &[f32], k: usize| (v[k] + v[k + 1]) / 2.0;
        let (a_t, h_t) = (mid(&a, n_ff / 10), mid(&h, n_ff * 9 / 10));
        let cascade = LayerPlan::new(
            None,
            LayerRule::Cascade {
                t_act: a_t,
                t_prod: h_t,
            },
        );
        let mut results = Vec::new();
        for paths in [PathPolicy::Fastest, PathPolicy::FewestBytes] {
            let mut out = vec![0.0; n_embd];
            let plan = cascade.clone().with_paths(paths);
            let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
            assert!(st.n_active > 0 && st.n_active <= n_ff / 10 + 1, "{st:?}");
            results.push((out, st));
        }
        assert_eq!(results[0].0, results[1].0);
        assert_eq!(results[0].1.n_active, results[1].1.n_active);
        let down_t_bytes = results[1].1.n_active * w.down_t.unwrap().row_bytes();
        assert_eq!(
            results[1].1.bytes_read,
            w.gate.total_bytes() + results[1].1.n_up * w.up.row_bytes() + down_t_bytes
        );
        if super::super::input_major::InputMajorKernel::best()
            != super::super::input_major::InputMajorKernel::Scalar
        {
            // Fastest: all up rows (a mild first stage), the copy for the down.
            assert_eq!(
                results[0].1.bytes_read,
                w.gate.total_bytes() + w.up.total_bytes() + down_t_bytes
            );
        }
        let want = reference(&o, n_embd, n_ff, &x, |a, u, _| {
            a.abs() > a_t as f64 && (a * u).abs() > h_t as f64
        });
        for (g, r) in results[0].0.iter().zip(&want) {
            assert!((*g as f64 - r).abs() < 1e-4, "{g} vs {r}");
        }
        assert_eq!(
            "bytes".parse::<PathPolicy>().unwrap(),
            PathPolicy::FewestBytes
        );
        assert_eq!(
            "fastest".parse::<PathPolicy>().unwrap(),
            PathPolicy::Fastest
        );
        assert!(matches!(
            "quick".parse::<PathPolicy>(),
            Err(crate::Error::InvalidArgument(_))
        ));
    }

    /// The neuron-major copy, forced, equals dense up to summation order; without a copy the
    /// forced path is a typed error.
    #[test]
    fn forced_neuron_major_down_matches_dense() {
        let (n_embd, n_ff) = (32, 96);
        let o = make(n_embd, n_ff, 5);
        let w = weights(&o, n_embd, n_ff, true);
        let mut sc = FfnScratch::default();
        let x = input(n_embd, 11);
        let mut dense = vec![0.0; n_embd];
        dense_ffn(&w, &x, &mut sc, &Serial, &mut dense).unwrap();
        let mut plan = LayerPlan::new(None, LayerRule::Dense);
        plan.down = DownPath::NeuronMajor;
        let mut out = vec![0.0; n_embd];
        let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
        assert_eq!(st.n_active, n_ff);
        for (a, b) in out.iter().zip(&dense) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let w2 = weights(&o, n_embd, n_ff, false);
        assert!(matches!(
            sparse_ffn(&w2, &plan, &x, &mut sc, &Serial, &mut out),
            Err(crate::Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn thresholded_paths_match_reference_and_skip_bytes() {
        let (n_embd, n_ff) = (32, 256);
        let o = make(n_embd, n_ff, 2);
        let w = weights(&o, n_embd, n_ff, true);
        let mut sc = FfnScratch::default();
        let x = input(n_embd, 7);
        let t = 0.08f32;
        let scale: Vec<f32> = (0..n_ff).map(|j| 0.5 + (j % 7) as f32 * 0.2).collect();
        let scale_ref = scale.clone();
        type Keep = Box<dyn Fn(f64, f64, usize) -> bool>;
        let cases: Vec<(LayerRule, Keep)> = vec![
            (
                LayerRule::Act(t),
                Box::new(move |a, _, _| a.abs() > t as f64),
            ),
            (
                LayerRule::Product(0.02),
                Box::new(|a, u, _| (a * u).abs() > 0.02),
            ),
            (
                LayerRule::Cascade {
                    t_act: 0.03,
                    t_prod: 0.02,
                },
                Box::new(|a, u, _| a.abs() > 0.03 && (a * u).abs() > 0.02),
            ),
            (
                LayerRule::ScaledCascade {
                    t: 0.03,
                    scale: scale.clone(),
                    t_prod: 0.02,
                },
                Box::new(move |a, u, j| {
                    a.abs() * scale_ref[j] as f64 > 0.03 && (a * u).abs() > 0.02
                }),
            ),
            // Up first: the stage-one test reads |up·x|, and the gate is computed only for
            // the neurons it keeps.
            (
                LayerRule::UpFirst {
                    t: 0.05,
                    scale: scale.clone(),
                    t_prod: -1.0,
                },
                Box::new({
                    let s = scale.clone();
                    move |_, u, j| u.abs() * s[j] as f64 > 0.05
                }),
            ),
            (
                LayerRule::UpFirst {
                    t: 0.05,
                    scale: scale.clone(),
                    t_prod: 0.02,
                },
                Box::new({
                    let s = scale.clone();
                    move |a, u, j| u.abs() * s[j] as f64 > 0.05 && (a * u).abs() > 0.02
                }),
            ),
        ];
        for (rule, keep) in cases {
            let plan = LayerPlan::new(None, rule);
            let mut out = vec![0.0; n_embd];
            let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
            let r = reference(&o, n_embd, n_ff, &x, &keep);
            let n_keep = (0..n_ff)
                .filter(|&j| {
                    let gx: f64 = (0..n_embd)
                        .map(|c| o.g[j * n_embd + c] as f64 * x[c] as f64)
                        .sum();
                    let a = gx / (1.0 + (-gx).exp());
                    let ux: f64 = (0..n_embd)
                        .map(|c| o.u[j * n_embd + c] as f64 * x[c] as f64)
                        .sum();
                    keep(a, ux, j)
                })
                .count();
            assert_eq!(st.n_active, n_keep, "{plan:?}");
            assert!(st.n_active < n_ff, "{plan:?} skipped nothing");
            for (a, b) in out.iter().zip(&r) {
                assert!((*a as f64 - b).abs() < 1e-4, "{plan:?}: {a} vs {b}");
            }
            assert!(st.bytes_skipped() > 0.0);
        }
    }

    /// With the fewest-bytes paths, an up-first rule reads every up row, the gate rows of the
    /// neurons it keeps only, and the down copy rows of those.
    #[test]
    fn up_first_reads_all_up_rows_and_only_the_kept_gate_rows() {
        let (n_embd, n_ff) = (32, 256);
        let o = make(n_embd, n_ff, 5);
        let w = weights(&o, n_embd, n_ff, true);
        let x = input(n_embd, 9);
        let scale = vec![1.0f32; n_ff];
        let t = 0.1f32;
        let kept = (0..n_ff)
            .filter(|&j| {
                let ux: f64 = (0..n_embd)
                    .map(|c| o.u[j * n_embd + c] as f64 * x[c] as f64)
                    .sum();
                ux.abs() > t as f64
            })
            .count();
        assert!(kept > 0 && kept < n_ff, "{kept}");
        let plan = LayerPlan::new(
            None,
            LayerRule::UpFirst {
                t,
                scale,
                t_prod: -1.0,
            },
        )
        .with_paths(PathPolicy::FewestBytes);
        let mut out = vec![0.0; n_embd];
        let st = sparse_ffn(&w, &plan, &x, &mut FfnScratch::default(), &Serial, &mut out).unwrap();
        assert_eq!((st.n_up, st.n_active), (kept, kept));
        let row = n_embd * 4;
        assert_eq!(st.bytes_read, n_ff * row + kept * row + kept * row);
    }

    #[test]
    fn dead_neurons_are_removed_within_tolerance() {
        let (n_embd, n_ff) = (16, 64);
        let mut o = make(n_embd, n_ff, 3);
        // Make neurons 5 and 40 dead: zero up rows, so act·up is 0 on every input.
        for j in [5usize, 40] {
            for c in 0..n_embd {
                o.u[j * n_embd + c] = 0.0;
            }
        }
        o.up = bytes(&o.u);
        let w = weights(&o, n_embd, n_ff, true);
        let mut dead = vec![false; n_ff];
        dead[5] = true;
        dead[40] = true;
        let plan = LayerPlan::new(LayerPlan::live_from_dead(&dead), LayerRule::Dense);
        let mut sc = FfnScratch::default();
        for seed in 0..3 {
            let x = input(n_embd, 50 + seed);
            let mut dense = vec![0.0; n_embd];
            dense_ffn(&w, &x, &mut sc, &Serial, &mut dense).unwrap();
            let mut out = vec![0.0; n_embd];
            let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
            assert_eq!(st.n_active, n_ff - 2);
            for (a, b) in out.iter().zip(&dense) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        assert_eq!(LayerPlan::live_from_dead(&[false; 8]), None);
    }

    #[test]
    fn stat_rule_keeps_neurons_above_mean_plus_k_sigma() {
        let (n_embd, n_ff) = (16, 128);
        let o = make(n_embd, n_ff, 4);
        let w = weights(&o, n_embd, n_ff, false);
        let x = input(n_embd, 9);
        let mut sc = FfnScratch::default();
        let mut out = vec![0.0; n_embd];
        let st = sparse_ffn(
            &w,
            &LayerPlan::new(None, LayerRule::Stat(0.0)),
            &x,
            &mut sc,
            &Serial,
            &mut out,
        )
        .unwrap();
        // k = 0 keeps the neurons above the mean |act|: strictly between none and all.
        assert!(st.n_active > 0 && st.n_active < n_ff);
        // Without a neuron-major copy the down stays dense.
        assert_eq!(
            st.bytes_read,
            w.gate.total_bytes() + st.n_up * w.up.row_bytes() + w.down.total_bytes()
        );
    }

    #[test]
    fn neuron_scales_of_the_wrong_length_are_an_error() {
        let (n_embd, n_ff) = (16, 128);
        let o = make(n_embd, n_ff, 4);
        let w = weights(&o, n_embd, n_ff, false);
        let x = input(n_embd, 9);
        let mut out = vec![0.0; n_embd];
        for len in [n_ff - 1, n_ff + 1] {
            let rule = LayerRule::Scaled {
                t: 0.1,
                scale: vec![1.0; len],
            };
            let e = sparse_ffn(
                &w,
                &LayerPlan::new(None, rule),
                &x,
                &mut FfnScratch::default(),
                &Serial,
                &mut out,
            )
            .unwrap_err();
            assert!(e.to_string().contains("neuron scales"), "{e}");
        }
    }

    /// Q5_0 gate and up (as in SmolLM2 and Gemma3) with their input-major copies, f32 down.
    struct Q5Layer {
        gate: Vec<u8>,
        up: Vec<u8>,
        down: Vec<u8>,
        /// Dequantized gate, up (row-major) and down.
        g: Vec<f32>,
        u: Vec<f32>,
        d: Vec<f32>,
        gate_in: InputMajorQ5_0,
        up_in: InputMajorQ5_0,
    }

    fn q5_layer(n_embd: usize, n_ff: usize, seed: u64) -> Q5Layer {
        use crate::quant::dequantize_row;
        use crate::quant::quantize::quantize_row;
        let o = make(n_embd, n_ff, seed);
        let rb = GgmlType::Q5_0.row_bytes(n_embd as u64).unwrap() as usize;
        let quant = |w: &[f32]| {
            let mut data = vec![0u8; n_ff * rb];
            let mut deq = vec![0f32; n_ff * n_embd];
            for i in 0..n_ff {
                let r = &mut data[i * rb..(i + 1) * rb];
                quantize_row(GgmlType::Q5_0, &w[i * n_embd..(i + 1) * n_embd], r).unwrap();
                dequantize_row(GgmlType::Q5_0, r, &mut deq[i * n_embd..(i + 1) * n_embd]).unwrap();
            }
            (data, deq)
        };
        let ((gate, g), (up, u)) = (quant(&o.g), quant(&o.u));
        let copy =
            |data: &[u8]| InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_ff, n_embd, data).unwrap();
        Q5Layer {
            gate_in: copy(&gate),
            up_in: copy(&up),
            gate,
            up,
            down: o.down,
            g,
            u,
            d: o.d,
        }
    }

    fn q5_weights(l: &Q5Layer, n_embd: usize, n_ff: usize, copies: bool) -> FfnWeights<'_> {
        let w = FfnWeights::new(
            QMatrix::new(GgmlType::Q5_0, n_ff, n_embd, &l.gate).unwrap(),
            QMatrix::new(GgmlType::Q5_0, n_ff, n_embd, &l.up).unwrap(),
            QMatrix::new(GgmlType::F32, n_embd, n_ff, &l.down).unwrap(),
            None,
            Activation::Silu,
        )
        .unwrap();
        if copies {
            w.with_input_major(Some(&l.gate_in), Some(&l.up_in))
                .unwrap()
        } else {
            w
        }
    }

    /// Input sparsity combined with each neuron rule: with every threshold at 0 the result is
    /// the dense one exactly (the copies are not even used); with thresholds, a projection
    /// through an input-major copy sees the masked input and reads fewer bytes than the rows,
    /// while one computed over rows sees the exact input (f64 reference over the dequantized
    /// weights): without copies the step is the rule's on the exact input, bit for bit.
    #[test]
    fn input_sparsity_combines_with_rules_through_input_major_copies() {
        let (n_embd, n_ff) = (64, 128);
        let l = q5_layer(n_embd, n_ff, 21);
        let with = q5_weights(&l, n_embd, n_ff, true);
        let without = q5_weights(&l, n_embd, n_ff, false);
        let mut sc = FfnScratch::default();
        let x = input(n_embd, 31);
        let mut dense = vec![0.0; n_embd];
        dense_ffn(&without, &x, &mut sc, &Serial, &mut dense).unwrap();
        let zero_rules = [
            LayerRule::Dense,
            LayerRule::Product(0.0),
            LayerRule::Cascade {
                t_act: 0.0,
                t_prod: 0.0,
            },
        ];
        for rule in zero_rules {
            let plan = LayerPlan::new(None, rule).with_input(Some(0.0));
            let mut out = vec![0.0; n_embd];
            let st = sparse_ffn(&with, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
            assert_eq!(out, dense, "{plan:?}");
            assert_eq!(st.bytes_skipped(), 0.0);
        }
        // About a third of the inputs below 0.6 in magnitude (inputs uniform in ±2).
        let t_in = 0.6f32;
        let xm: Vec<f32> = x
            .iter()
            .map(|&v| if v.abs() <= t_in { 0.0 } else { v })
            .collect();
        assert!(xm.iter().filter(|v| **v == 0.0).count() > n_embd / 5);
        for (rule, t_act, t_prod) in [
            (LayerRule::Dense, -1.0, -1.0),
            (LayerRule::Product(0.02), -1.0, 0.02),
            (
                LayerRule::Cascade {
                    t_act: 0.03,
                    t_prod: 0.02,
                },
                0.03,
                0.02,
            ),
        ] {
            let plan = LayerPlan::new(None, rule.clone()).with_input(Some(t_in));
            let mut got = vec![0.0; n_embd];
            let st = sparse_ffn(&with, &plan, &x, &mut sc, &Serial, &mut got).unwrap();
            assert!(st.paths.contains(PathClass::InputMajor), "{plan:?}");
            // Without copies every projection reads all its columns: the exact input's step.
            let mut rows = vec![0.0; n_embd];
            let st_rows = sparse_ffn(&without, &plan, &x, &mut sc, &Serial, &mut rows).unwrap();
            let mut exact = vec![0.0; n_embd];
            let st_exact = sparse_ffn(
                &without,
                &LayerPlan::new(None, rule),
                &x,
                &mut sc,
                &Serial,
                &mut exact,
            )
            .unwrap();
            assert_eq!(rows, exact, "{plan:?}");
            assert_eq!(st_rows.n_active, st_exact.n_active, "{plan:?}");
            assert!(st.bytes_read < st_rows.bytes_read, "{plan:?}");
            // Reference in f64 on the dequantized weights: the gate over the masked input (its
            // copy is always the cheaper), the up over the masked input only if its copy was
            // taken too (otherwise its kept rows were gathered, on the exact input). The
            // kernels quantize the input to 8 bits, hence the tolerance.
            let up_in = if st.paths.contains(PathClass::GatheredRows) {
                &x
            } else {
                &xm
            };
            let mut want = vec![0f64; n_embd];
            for j in 0..n_ff {
                let dot = |w: &[f32], x: &[f32]| -> f64 {
                    (0..n_embd)
                        .map(|c| w[j * n_embd + c] as f64 * x[c] as f64)
                        .sum()
                };
                let gx = dot(&l.g, &xm);
                let a = gx / (1.0 + (-gx).exp());
                let h = a * dot(&l.u, up_in);
                if a.abs() <= t_act || h.abs() <= t_prod {
                    continue;
                }
                for (r, wv) in want.iter_mut().enumerate() {
                    *wv += l.d[r * n_ff + j] as f64 * h;
                }
            }
            let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
            for r in 0..n_embd {
                assert!(
                    (got[r] as f64 - want[r]).abs() <= 0.03 * scale,
                    "{plan:?}: {} vs reference {}",
                    got[r],
                    want[r]
                );
            }
        }
    }

    /// A Q6_K down with its exact neuron-major copy: with neurons skipped, the copy is taken
    /// (it reads fewer bytes than the dense down) and gives the dense down's result on the
    /// masked coefficients (both quantize the coefficients to 8 bits per 256, hence the
    /// tolerance); a copy of another type than the down is refused.
    /// `act·up` of every neuron for input `x`, from a dense step.
    fn dense_products(w: &FfnWeights, x: &[f32], sc: &mut FfnScratch) -> Vec<f32> {
        let mut out = vec![0.0; w.n_embd()];
        sparse_ffn(w, &LayerPlan::DENSE, x, sc, &Serial, &mut out).unwrap();
        let (act, up) = sc.dense_act_up();
        act.iter().zip(up).map(|(a, u)| a * u).collect()
    }

    /// `o`'s down (`n_embd` rows of `n_ff`) quantized to Q6_K.
    fn q6_k_down(o: &Owned, n_embd: usize, n_ff: usize) -> Vec<u8> {
        use crate::quant::quantize::quantize_row;
        let rb = GgmlType::Q6_K.row_bytes(n_ff as u64).unwrap() as usize;
        let mut down = vec![0u8; n_embd * rb];
        for (row, dst) in o.d.chunks_exact(n_ff).zip(down.chunks_exact_mut(rb)) {
            quantize_row(GgmlType::Q6_K, row, dst).unwrap();
        }
        down
    }

    #[test]
    fn exact_q6_k_down_matches_masked_dense_down() {
        let (n_embd, n_ff) = (64, 512);
        let o = make(n_embd, n_ff, 41);
        let down = q6_k_down(&o, n_embd, n_ff);
        let exact = ExactDown::from_down(GgmlType::Q6_K, n_embd, n_ff, &down).unwrap();
        let f = GgmlType::F32;
        let w = FfnWeights::new(
            QMatrix::new(f, n_ff, n_embd, &o.gate).unwrap(),
            QMatrix::new(f, n_ff, n_embd, &o.up).unwrap(),
            QMatrix::new(GgmlType::Q6_K, n_embd, n_ff, &down).unwrap(),
            None,
            Activation::Silu,
        )
        .unwrap();
        assert!(matches!(
            weights(&o, n_embd, n_ff, false).with_exact_down(&exact),
            Err(crate::Error::Format(_))
        ));
        let w = w.with_exact_down(&exact).unwrap();
        let x = input(n_embd, 43);
        let mut sc = FfnScratch::default();
        // Thresholds at the 80th and 92nd percentiles of |act·up|: with that few neurons
        // active the exact copy is the cheapest path under any path costs.
        let mut h: Vec<f32> = dense_products(&w, &x, &mut sc)
            .iter()
            .map(|v| v.abs())
            .collect();
        h.sort_by(f32::total_cmp);
        for t in [h[n_ff * 80 / 100], h[n_ff * 92 / 100]] {
            let auto = LayerPlan::new(None, LayerRule::Product(t));
            let dense_down = LayerPlan {
                down: DownPath::Dense,
                ..auto.clone()
            };
            let mut got = vec![0.0; n_embd];
            let st = sparse_ffn(&w, &auto, &x, &mut sc, &Serial, &mut got).unwrap();
            let ids = sc.ids.clone();
            let mut want = vec![0.0; n_embd];
            let st_dense = sparse_ffn(&w, &dense_down, &x, &mut sc, &Serial, &mut want).unwrap();
            assert!(
                st.n_active < n_ff && st.n_active == st_dense.n_active,
                "t {t}"
            );
            let gate_up = w.gate.total_bytes() + w.up.total_bytes();
            assert_eq!(st.bytes_read, gate_up + exact.bytes_for(&ids), "t {t}");
            assert!(st.bytes_read < st_dense.bytes_read, "t {t}");
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for r in 0..n_embd {
                assert!(
                    (got[r] - want[r]).abs() <= 0.02 * scale,
                    "t {t} output {r}: exact copy {} vs dense down {}",
                    got[r],
                    want[r]
                );
            }
        }
    }
    /// `coarse:S` on a Q6_K down with a Q4_0 coarse copy: the active neurons at or below the
    /// coarse threshold read the coarse rows, the others the exact copy (f64 reference over
    /// both copies' dequantized rows), and the step reads exactly those rows' bytes. A
    /// threshold below every active product, or a missing coarse copy, changes nothing.
    #[test]
    fn coarse_rows_serve_the_smallest_active_products() {
        use crate::quant::dequantize_row;
        use crate::sparsity::repack::{coarse_copy_type, neuron_major_down};
        let (n_embd, n_ff) = (64, 512);
        let o = make(n_embd, n_ff, 51);
        let down = q6_k_down(&o, n_embd, n_ff);
        let down_m = QMatrix::new(GgmlType::Q6_K, n_embd, n_ff, &down).unwrap();
        let exact = ExactDown::from_down(GgmlType::Q6_K, n_embd, n_ff, &down).unwrap();
        let coarse_ty = coarse_copy_type(GgmlType::Q6_K, n_embd).unwrap();
        assert_eq!(coarse_ty, GgmlType::Q4_0);
        let (coarse, _) = neuron_major_down(&down_m, coarse_ty).unwrap();
        let coarse_m = QMatrix::new(coarse_ty, n_ff, n_embd, &coarse).unwrap();
        let f = GgmlType::F32;
        let plain = FfnWeights::new(
            QMatrix::new(f, n_ff, n_embd, &o.gate).unwrap(),
            QMatrix::new(f, n_ff, n_embd, &o.up).unwrap(),
            down_m,
            None,
            Activation::Silu,
        )
        .unwrap()
        .with_exact_down(&exact)
        .unwrap();
        let w = plain.with_coarse_down(coarse_m).unwrap();
        assert!(matches!(
            plain.with_coarse_down(
                QMatrix::new(coarse_ty, n_ff / 2, n_embd, &coarse[..coarse.len() / 2]).unwrap()
            ),
            Err(crate::Error::Format(_))
        ));
        let x = input(n_embd, 53);
        let mut sc = FfnScratch::default();
        let h = dense_products(&w, &x, &mut sc);
        let mut sorted: Vec<f32> = h.iter().map(|v| v.abs()).collect();
        sorted.sort_by(f32::total_cmp);
        // 40% of the neurons active; the lower 25 points of them coarse.
        let (t_prod, t_coarse) = (sorted[n_ff * 60 / 100], sorted[n_ff * 85 / 100]);
        let base =
            LayerPlan::new(None, LayerRule::Product(t_prod)).with_paths(PathPolicy::FewestBytes);
        let mut without = vec![0.0; n_embd];
        let st0 = sparse_ffn(&w, &base, &x, &mut sc, &Serial, &mut without).unwrap();
        assert_eq!(st0.n_coarse, 0);
        let plan = base.clone().with_coarse(Some(t_coarse));
        let mut got = vec![0.0; n_embd];
        let st = sparse_ffn(&w, &plan, &x, &mut sc, &Serial, &mut got).unwrap();
        let fine: Vec<u32> = (0..n_ff as u32)
            .filter(|&j| h[j as usize].abs() > t_coarse)
            .collect();
        let rough: Vec<u32> = (0..n_ff as u32)
            .filter(|&j| h[j as usize].abs() > t_prod && h[j as usize].abs() <= t_coarse)
            .collect();
        assert!(
            rough.len() > n_ff / 5 && fine.len() > n_ff / 20,
            "{} / {}",
            rough.len(),
            fine.len()
        );
        assert_eq!(st.n_active, st0.n_active);
        assert_eq!(st.n_coarse, rough.len());
        let gate_up = w.gate.total_bytes() + w.up.total_bytes();
        assert_eq!(
            st.bytes_read,
            gate_up + exact.bytes_for(&fine) + rough.len() * coarse_m.row_bytes()
        );
        assert!(st.bytes_read < st0.bytes_read);
        // Reference: the exact copy's own sum over the fine neurons (its kernel rounds the
        // coefficients, see `exact_q6_k_down_matches_masked_dense_down`), plus the coarse rows
        // of the others in f64.
        let fine_h: Vec<f32> = fine.iter().map(|&j| h[j as usize]).collect();
        let mut fine_out = vec![0.0; n_embd];
        exact_down_split(
            &exact,
            &fine,
            &fine_h,
            &mut fine_out,
            &Serial,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap();
        let crb = coarse_m.row_bytes();
        let mut row = vec![0f32; n_embd];
        let mut want: Vec<f64> = fine_out.iter().map(|&v| v as f64).collect();
        for &j in &rough {
            dequantize_row(
                coarse_ty,
                &coarse[j as usize * crb..(j as usize + 1) * crb],
                &mut row,
            )
            .unwrap();
            for (wv, &d) in want.iter_mut().zip(&row) {
                *wv += d as f64 * h[j as usize] as f64;
            }
        }
        let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        let mut moved = 0f64;
        for r in 0..n_embd {
            assert!(
                (got[r] as f64 - want[r]).abs() <= 1e-4 * scale,
                "output {r}: {} vs reference {}",
                got[r],
                want[r]
            );
            moved = moved.max((got[r] - without[r]).abs() as f64);
        }
        assert!(
            moved > 1e-2 * scale,
            "the coarse rows changed too little: {moved}"
        );
        // Nothing coarse below the product threshold; no coarse copy, no coarse rows.
        for (weights, plan) in [
            (&w, base.clone().with_coarse(Some(t_prod * 0.5))),
            (&plain, plan.clone()),
        ] {
            let mut out = vec![0.0; n_embd];
            let st1 = sparse_ffn(weights, &plan, &x, &mut sc, &Serial, &mut out).unwrap();
            assert_eq!(out, without);
            assert_eq!((st1.n_coarse, st1.bytes_read), (0, st0.bytes_read));
        }
    }
}
