//! Plugging the sparse FFN into a [`Context`]: one [`DecodeFfn`] per layer, running the
//! row-packed kernel on the context's thread pool, with a shared tally of what was skipped.
//! Also the calibrating FFN, which runs dense and records what every neuron did.

use std::sync::{Arc, Mutex, MutexGuard};

use super::exact_down::ExactDown;
use super::ffn::{sparse_ffn, Activation, FfnScratch, FfnStepStats, FfnWeights, LayerPlan};
use super::input_major::{place_in_huge_pages, InputMajorQ5_0};
use super::path_costs::{PathClass, PathCosts, PathSet};
use super::plan::SparsityTally;
use super::repack::{coarse_copy_type, default_copy_type, neuron_major_down};
use super::rows::{QMatrix, Splitter};
use super::sidecar::DownCopy;
use super::stats::CalibrationStats;
use crate::context::Context;
use crate::model::config::Activation as ModelActivation;
use crate::model::ffn::{DecodeFfn, FfnCall};
use crate::model::{Model, Weight};
use crate::quant::GgmlType;
use crate::threadpool::ThreadPool;
use crate::{bail, Result};

/// [`Splitter`] over a thread pool (the context's, in decode).
pub struct PoolSplitter<'a>(pub &'a ThreadPool);

impl Splitter for PoolSplitter<'_> {
    fn n_workers(&self) -> usize {
        self.0.n_threads()
    }
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        self.0.for_each_chunk(n_tasks, 1, |_, r| r.for_each(f));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn qmatrix<'a>(model: &'a Model, w: &Weight) -> Result<QMatrix<'a>> {
    QMatrix::new(w.ty, w.n_rows, w.n_cols, model.bytes(w))
}

fn activation(model: &Model) -> Activation {
    match model.config().activation {
        ModelActivation::Silu => Activation::Silu,
        ModelActivation::GeluTanh => Activation::GeluTanh,
    }
}

/// The FFN weights of `layer`, with an optional neuron-major down copy.
pub fn layer_weights<'a>(
    model: &'a Model,
    layer: usize,
    down_t: Option<&'a DownCopy>,
) -> Result<FfnWeights<'a>> {
    let lw = model.layer(layer);
    let copy = match down_t {
        Some(c) => Some(QMatrix::new(
            c.ty,
            lw.ffn_gate.n_rows,
            lw.ffn_gate.n_cols,
            &c.data,
        )?),
        None => None,
    };
    FfnWeights::new(
        qmatrix(model, &lw.ffn_gate)?,
        qmatrix(model, &lw.ffn_up)?,
        qmatrix(model, &lw.ffn_down)?,
        copy,
        activation(model),
    )
}

/// Neuron-major copies of every layer's `ffn_down` (type `ty`, or the default per layer),
/// with the largest relative RMS requantization error over the layers.
pub fn build_down_copies(model: &Model, ty: Option<GgmlType>) -> Result<(Vec<DownCopy>, f64)> {
    let n_embd = model.config().n_embd;
    let mut worst = 0f64;
    let mut out = Vec::with_capacity(model.config().n_layer);
    for il in 0..model.config().n_layer {
        let down = qmatrix(model, &model.layer(il).ffn_down)?;
        let t = ty.unwrap_or_else(|| default_copy_type(down.ty, n_embd));
        let (data, err) = neuron_major_down(&down, t)?;
        worst = worst.max(err.rel_rmse);
        out.push(DownCopy { ty: t, data });
    }
    Ok((out, worst))
}

/// Coarse neuron-major copies of every layer's `ffn_down` for `coarse:S`, of the type
/// [`coarse_copy_type`] gives (`None` for layers without one), with the largest relative RMS
/// requantization error over them.
pub fn build_coarse_downs(model: &Model) -> Result<(Vec<Option<DownCopy>>, f64)> {
    let n_embd = model.config().n_embd;
    let mut worst = 0f64;
    let mut out = Vec::with_capacity(model.config().n_layer);
    for il in 0..model.config().n_layer {
        let down = qmatrix(model, &model.layer(il).ffn_down)?;
        out.push(match coarse_copy_type(down.ty, n_embd) {
            Some(t) => {
                let (data, err) = neuron_major_down(&down, t)?;
                worst = worst.max(err.rel_rmse);
                Some(DownCopy { ty: t, data })
            }
            None => None,
        });
    }
    Ok((out, worst))
}

/// Exact neuron-major copies ([`ExactDown`]) of every layer whose `ffn_down` is Q4_K or
/// Q6_K (`None` for the other layers). Cheap: the quants are only moved, never requantized.
pub fn build_exact_downs(model: &Model) -> Vec<Option<ExactDown>> {
    let n_embd = model.config().n_embd;
    (0..model.config().n_layer)
        .map(|il| {
            let d = &model.layer(il).ffn_down;
            ExactDown::from_down(d.ty, n_embd, d.n_cols, model.bytes(d)).ok()
        })
        .collect()
}

/// The input-major copies of one layer's gate and up (`None` where the type has none).
#[derive(Clone, Debug, Default)]
pub struct InputMajorCopies {
    pub gate: Option<InputMajorQ5_0>,
    pub up: Option<InputMajorQ5_0>,
}

/// Exact input-major copies ([`InputMajorQ5_0`]) of every layer's Q5_0 `ffn_gate` and
/// `ffn_up` (`None` for other types). The quants are only moved, never requantized.
pub fn build_input_majors(model: &Model) -> Vec<InputMajorCopies> {
    let copy =
        |w: &Weight| InputMajorQ5_0::from_q5_0(w.ty, w.n_rows, w.n_cols, model.bytes(w)).ok();
    let mut copies: Vec<InputMajorCopies> = (0..model.config().n_layer)
        .map(|il| {
            let lw = model.layer(il);
            InputMajorCopies {
                gate: copy(&lw.ffn_gate),
                up: copy(&lw.ffn_up),
            }
        })
        .collect();
    place_in_huge_pages(
        copies
            .iter_mut()
            .flat_map(|c| c.gate.iter_mut().chain(c.up.iter_mut())),
    );
    copies
}

/// One layer's sparse FFN as a [`DecodeFfn`].
struct SparseLayer {
    layer: usize,
    plan: LayerPlan,
    down: Option<Arc<Vec<DownCopy>>>,
    exact: Option<Arc<Vec<Option<ExactDown>>>>,
    input_major: Option<Arc<Vec<InputMajorCopies>>>,
    coarse: Option<Arc<Vec<Option<DownCopy>>>>,
    scratch: Mutex<FfnScratch>,
    tally: Arc<Mutex<SparsityTally>>,
}

impl DecodeFfn for SparseLayer {
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> Result<()> {
        let copy = self.down.as_ref().map(|d| &d[self.layer]);
        let mut w = layer_weights(call.model, self.layer, copy)?;
        if let Some(e) = self.exact.as_ref().and_then(|e| e[self.layer].as_ref()) {
            w = w.with_exact_down(e)?;
        }
        if let Some(c) = self.input_major.as_ref().map(|c| &c[self.layer]) {
            w = w.with_input_major(c.gate.as_ref(), c.up.as_ref())?;
        }
        if let Some(c) = self.coarse.as_ref().and_then(|c| c[self.layer].as_ref()) {
            let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
            w = w.with_coarse_down(QMatrix::new(c.ty, n_ff, n_embd, &c.data)?)?;
        }
        let mut scratch = lock(&self.scratch);
        let st: FfnStepStats = sparse_ffn(
            &w,
            &self.plan,
            x,
            &mut scratch,
            &PoolSplitter(call.pool),
            out,
        )?;
        lock(&self.tally).add(self.layer, &st);
        Ok(())
    }
}

/// Handle on an installed sparse FFN: read the tally, reset it.
#[derive(Clone, Debug)]
pub struct SparseHandle {
    tally: Arc<Mutex<SparsityTally>>,
}

impl SparseHandle {
    pub fn tally(&self) -> SparsityTally {
        lock(&self.tally).clone()
    }

    pub fn reset(&self) {
        let mut t = lock(&self.tally);
        let n = t.layers.len();
        *t = SparsityTally::new(n);
    }
}

/// Replace every layer's decode FFN by the sparse kernel with `plans[layer]`. Unless every
/// plan is dense, the exact neuron-major copies of Q4_K and Q6_K downs are built and used
/// where they read fewer bytes than `down` (requantized copies, needed only for layers of
/// other types) or the dense down (see [`install_with`]).
pub fn install(
    ctx: &mut Context,
    plans: Vec<LayerPlan>,
    down: Option<Arc<Vec<DownCopy>>>,
) -> Result<SparseHandle> {
    install_without(ctx, plans, down, PathSet::EMPTY)
}

/// [`install`], building no copies for the path classes in `never` (decode with the
/// installed path costs never takes them: see [`attach`]). On an accelerated context
/// `never` is ignored.
fn install_without(
    ctx: &mut Context,
    plans: Vec<LayerPlan>,
    down: Option<Arc<Vec<DownCopy>>>,
    never: PathSet,
) -> Result<SparseHandle> {
    if ctx.is_accelerated() {
        return install_accelerated(ctx, &plans, down);
    }
    let exact = (plans.iter().any(|p| *p != LayerPlan::DENSE)
        && !never.contains(PathClass::ExactDown))
    .then(|| Arc::new(build_exact_downs(ctx.model())));
    let down = down.filter(|_| !never.contains(PathClass::RequantizedDown));
    install_parts(ctx, plans, down, exact, never)
}

/// Whether every layer's `ffn_down` has an exact neuron-major copy ([`ExactDown`]), so that
/// requantized copies would never be read.
pub fn exact_downs_cover(model: &Model) -> bool {
    let n_embd = model.config().n_embd;
    (0..model.config().n_layer).all(|il| {
        let d = &model.layer(il).ffn_down;
        ExactDown::supports(d.ty, n_embd, d.n_cols)
    })
}

/// [`install`] on an accelerated context: the plans become device rules
/// ([`super::accelerated`]); the device reads its own down copy type (`down` serves when it
/// is of that type, else copies are built). The handle's own tally stays empty: read the
/// device counters with [`super::accelerated::current_tally`].
fn install_accelerated(
    ctx: &mut Context,
    plans: &[LayerPlan],
    down: Option<Arc<Vec<DownCopy>>>,
) -> Result<SparseHandle> {
    let model = ctx.model().clone();
    let copies = match super::accelerated::device_copy_type()? {
        None => None,
        Some(ty) => match down {
            Some(c) if c.iter().all(|c| c.ty == ty) => Some(c),
            _ => Some(Arc::new(build_down_copies(&model, Some(ty))?.0)),
        },
    };
    super::accelerated::attach(ctx, plans, copies.as_deref().map(|c| &c[..]))?;
    Ok(SparseHandle {
        tally: Arc::new(Mutex::new(SparsityTally::new(model.config().n_layer))),
    })
}

/// [`install`] with the exact copies given (`None`: only the requantized copies are used).
pub fn install_with(
    ctx: &mut Context,
    plans: Vec<LayerPlan>,
    down: Option<Arc<Vec<DownCopy>>>,
    exact: Option<Arc<Vec<Option<ExactDown>>>>,
) -> Result<SparseHandle> {
    install_parts(ctx, plans, down, exact, PathSet::EMPTY)
}

/// [`install_with`], building the input-major gate/up copies (where a plan zeroes input
/// entries) and the coarse down copies (where a plan reads coarse rows) unless `never`
/// names their path class.
fn install_parts(
    ctx: &mut Context,
    plans: Vec<LayerPlan>,
    down: Option<Arc<Vec<DownCopy>>>,
    exact: Option<Arc<Vec<Option<ExactDown>>>>,
    never: PathSet,
) -> Result<SparseHandle> {
    let n_layer = ctx.model().config().n_layer;
    if plans.len() != n_layer {
        bail!(
            InvalidArgument,
            "{} layer plans for {n_layer} layers",
            plans.len()
        );
    }
    if let Some(e) = &exact {
        if e.len() != n_layer {
            bail!(
                InvalidArgument,
                "{} exact down copies for {n_layer} layers",
                e.len()
            );
        }
    }
    if let Some(d) = &down {
        if d.len() != n_layer {
            bail!(
                InvalidArgument,
                "{} down copies for {n_layer} layers",
                d.len()
            );
        }
    }
    // Input-major gate/up copies only where a plan zeroes input entries.
    let input_major = (!never.contains(PathClass::InputMajor)
        && plans.iter().any(|p| p.input.is_some()))
    .then(|| Arc::new(build_input_majors(ctx.model())));
    // Coarse down copies only where a plan reads coarse rows (beside the exact copies; they
    // are read by the requantized-copy kernels).
    let coarse = match exact.is_some()
        && !never.contains(PathClass::RequantizedDown)
        && plans.iter().any(|p| p.coarse.is_some())
    {
        true => Some(Arc::new(build_coarse_downs(ctx.model())?.0)),
        false => None,
    };
    let tally = Arc::new(Mutex::new(SparsityTally::new(n_layer)));
    for (layer, plan) in plans.into_iter().enumerate() {
        let f = SparseLayer {
            layer,
            plan,
            down: down.clone(),
            exact: exact.clone(),
            input_major: input_major.clone(),
            coarse: coarse.clone(),
            scratch: Mutex::new(FfnScratch::default()),
            tally: tally.clone(),
        };
        ctx.set_decode_ffn(layer, Some(Arc::new(f)))?;
    }
    Ok(SparseHandle { tally })
}

/// Restore the dense FFN in every layer (on an accelerated context: switch its sparse FFN
/// off; [`Context::set_accelerated_ffn_sparsity_enabled`] switches it back on).
pub fn uninstall(ctx: &mut Context) -> Result<()> {
    ctx.set_accelerated_ffn_sparsity_enabled(false)?;
    for layer in 0..ctx.model().config().n_layer {
        ctx.set_decode_ffn(layer, None)?;
    }
    Ok(())
}

/// Dense FFN that records, per token, the input, act(gate·x) and up·x of every neuron.
struct CalibratingLayer {
    layer: usize,
    scratch: Mutex<FfnScratch>,
    stats: Arc<Mutex<CalibrationStats>>,
}

impl DecodeFfn for CalibratingLayer {
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> Result<()> {
        let w = layer_weights(call.model, self.layer, None)?;
        let mut s = lock(&self.scratch);
        sparse_ffn(
            &w,
            &LayerPlan::DENSE,
            x,
            &mut s,
            &PoolSplitter(call.pool),
            out,
        )?;
        let (act, up) = s.dense_act_up();
        lock(&self.stats).observe(self.layer, x, act, up);
        Ok(())
    }
}

/// Install calibrating FFNs in every layer; they add to `stats`.
pub fn install_calibration(ctx: &mut Context, stats: Arc<Mutex<CalibrationStats>>) -> Result<()> {
    for layer in 0..ctx.model().config().n_layer {
        let f = CalibratingLayer {
            layer,
            scratch: Mutex::new(FfnScratch::default()),
            stats: stats.clone(),
        };
        ctx.set_decode_ffn(layer, Some(Arc::new(f)))?;
    }
    Ok(())
}

/// Front-end helper for `--mask FILE --sparsity MODE`: load and check the sidecar, resolve
/// the mode with path policy `paths`, and install the sparse FFN in `ctx`. `Ok(None)` for
/// the dense mode. With the fastest paths, the copies of path classes that the path costs
/// installed for `ctx`'s width and thread count never take (`ghost tune` turned them off)
/// are not built (on SmolLM2 the exact down copies are 18 MB of peak memory).
pub fn attach(
    ctx: &mut Context,
    mask: Option<&std::path::Path>,
    mode: &str,
    paths: super::ffn::PathPolicy,
) -> Result<Option<SparseHandle>> {
    let mode: super::mode::SparsityMode = mode.parse()?;
    if mode.is_dense() {
        return Ok(None);
    }
    let model = ctx.model().clone();
    let sidecar = match mask {
        Some(p) => Some(super::sidecar::Sidecar::load(p, model.gguf())?),
        None => None,
    };
    let plans = super::plan::resolve_plans(&mode, sidecar.as_ref(), model.config().n_layer)?
        .into_iter()
        .map(|p| p.with_paths(paths))
        .collect();
    let never = match paths {
        super::ffn::PathPolicy::Fastest if !ctx.is_accelerated() => {
            PathCosts::of_this_process(model.config().n_embd, ctx.n_threads()).off
        }
        _ => PathSet::EMPTY,
    };
    let copies = match sidecar.and_then(|s| s.down_copies) {
        Some(c) => Some(c),
        // An accelerated context builds the copy type its device reads (see `install`).
        None if ctx.is_accelerated() => None,
        None if never.contains(PathClass::RequantizedDown) => None,
        // Exact copies (built by `install`) serve every layer: no requantized copy needed
        // (nor, where the exact ones are turned off, one the tune never measured).
        None if exact_downs_cover(&model) => None,
        None => Some(build_down_copies(&model, None)?.0),
    };
    install_without(ctx, plans, copies.map(Arc::new), never).map(Some)
}

/// The per-layer sparsity and `FFN bytes skipped` lines front ends print.
pub fn tally_summary(t: &SparsityTally) -> String {
    let per: Vec<String> = t
        .layer_sparsity()
        .iter()
        .map(|s| format!("{:.0}", 100.0 * s))
        .collect();
    let mut s = format!(
        "per-layer sparsity (%): {}\nneuron sparsity: {:.1}%\nFFN bytes skipped: {:.1}%",
        per.join(" "),
        100.0 * t.sparsity(),
        100.0 * t.bytes_skipped()
    );
    let coarse = t.coarse_share();
    if coarse > 0.0 {
        s += &format!("\ncoarse down rows: {:.1}% of the neurons", 100.0 * coarse);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextParams;
    use crate::gguf::GgufFile;
    use crate::model::ModelParams;
    use crate::sparsity::path_costs::{clear_tuned, install_tuned};
    use crate::sparsity::{LayerRule, PathPolicy};

    /// What decode took over a few tokens, with every class priced by its bytes.
    fn paths_taken(ctx: &mut Context, h: &SparseHandle) -> PathSet {
        let width = ctx.model().config().n_embd;
        install_tuned(width, ctx.n_threads(), PathCosts::BYTES);
        ctx.reset();
        h.reset();
        for t in [1u32, 7, 42, 99, 3, 250] {
            ctx.decode(&[t]).unwrap();
        }
        h.tally().paths_taken()
    }

    /// A context over the tiny synthetic model with weights of `ty`, its width, and a thread
    /// count no other test installs path costs for (they are process-wide).
    fn tiny_context(ty: &str) -> (Context, usize, usize) {
        let shape = crate::cli::synth::shape("tiny").unwrap();
        let w = crate::cli::synth::build(&shape, "llama", ty, None, 11).unwrap();
        let params = ModelParams {
            skip_tokenizer: true,
            ..ModelParams::default()
        };
        let model = Model::from_file(GgufFile::from_bytes(w.to_bytes()).unwrap(), &params).unwrap();
        let n_threads = 3;
        let ctx = Context::new(
            model,
            ContextParams {
                n_ctx: 64,
                n_threads,
                ..Default::default()
            },
        )
        .unwrap();
        (ctx, shape.n_embd, n_threads)
    }

    /// With the fastest paths, the copies of the classes the installed costs never take are
    /// not built: decode cannot take them even once the costs would (and, as a control, it
    /// does when they were built).
    #[test]
    fn attach_builds_no_copies_for_classes_turned_off() {
        // Q4_K_M types: the downs have exact copies.
        let (mut ctx, width, n_threads) = tiny_context("q4_k_m");
        assert!(exact_downs_cover(ctx.model()));
        for (off, exact_built) in [
            (PathSet::EMPTY, true),
            (PathSet::EMPTY.with(PathClass::ExactDown), false),
        ] {
            let costs = off.iter().fold(PathCosts::BYTES, PathCosts::without);
            install_tuned(width, n_threads, costs);
            let h = attach(&mut ctx, None, "stat:0.5", PathPolicy::Fastest)
                .unwrap()
                .unwrap();
            let taken = paths_taken(&mut ctx, &h);
            assert_eq!(taken.contains(PathClass::ExactDown), exact_built, "{off:?}");
            uninstall(&mut ctx).unwrap();
        }
        clear_tuned(width, n_threads);
        // The input-major copies likewise, for plans that zero input entries (of Q5_0 gate
        // and up rows).
        let (mut ctx, width, n_threads) = tiny_context("q5_0");
        let n_layer = ctx.model().config().n_layer;
        let plans = vec![LayerPlan::new(None, LayerRule::Stat(0.5)).with_input(Some(0.5)); n_layer];
        for (never, built) in [
            (PathSet::EMPTY, true),
            (PathSet::EMPTY.with(PathClass::InputMajor), false),
        ] {
            let h = install_without(&mut ctx, plans.clone(), None, never).unwrap();
            let taken = paths_taken(&mut ctx, &h);
            assert_eq!(taken.contains(PathClass::InputMajor), built, "{never:?}");
            uninstall(&mut ctx).unwrap();
        }
        clear_tuned(width, n_threads);
    }

    /// Plans with coarse rows get coarse copies for the layers whose down type has one, and
    /// read them: a threshold above every product sends each active neuron of those layers to
    /// its coarse row, so fewer bytes are read than without.
    #[test]
    fn coarse_plans_build_and_read_the_coarse_copies() {
        let (mut ctx, width, _) = tiny_context("q4_k_m");
        let n_layer = ctx.model().config().n_layer;
        let coarse_layers = (0..n_layer)
            .filter(|&il| coarse_copy_type(ctx.model().layer(il).ffn_down.ty, width).is_some())
            .count();
        assert!(coarse_layers > 0);
        let (coarse, _) = build_coarse_downs(ctx.model()).unwrap();
        assert_eq!(coarse.iter().filter(|c| c.is_some()).count(), coarse_layers);
        let base = LayerPlan::new(None, LayerRule::Stat(0.5)).with_paths(PathPolicy::FewestBytes);
        let mut skipped = Vec::new();
        for t in [None, Some(f32::INFINITY)] {
            let h = install(&mut ctx, vec![base.clone().with_coarse(t); n_layer], None).unwrap();
            ctx.reset();
            h.reset();
            for tok in [1u32, 7, 42, 99] {
                ctx.decode(&[tok]).unwrap();
            }
            let tally = h.tally();
            assert_eq!(tally.coarse_share() > 0.0, t.is_some(), "{t:?}");
            skipped.push(tally.bytes_skipped());
            uninstall(&mut ctx).unwrap();
        }
        assert!(skipped[1] > skipped[0], "{skipped:?}");
    }
}
