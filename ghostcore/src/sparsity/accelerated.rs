//! The sparse FFN on an accelerated backend (the GPU): resolved layer plans translated into
//! the per-layer rules the device kernels evaluate ([`LayerFfnSparsity`]), and the device's
//! read counters turned into the same [`SparsityTally`] the CPU path keeps.
//!
//! The device evaluates the gate stage (`|act| > t`, optionally weighted per neuron, which
//! also carries the dead-neuron mask as zero weights) and the product stage (`|act·up| > t`)
//! of every mode but the per-token statistic (`stat:K`) and input sparsity (`input:S`, alone
//! or combined), which stay CPU-only (`Unsupported`). The up-first stage (`actw`) has no
//! device kernel either: the device applies such a rule's product stage only.

use super::ffn::{LayerPlan, LayerRule};
use super::plan::{LayerTally, SparsityTally};
use super::sidecar::DownCopy;
use crate::backend::LayerFfnSparsity;
use crate::context::Context;
use crate::quant::GgmlType;
use crate::{bail, Result};

/// One layer's device rule, owning its per-neuron weights.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRule {
    pub act_threshold: f32,
    pub neuron_scale: Option<Vec<f32>>,
    pub product_threshold: f32,
}

/// The device rule of `plan` (`None`: the layer runs dense). A plan with input sparsity is
/// `Unsupported` (see [`attach`], which drops that stage).
pub fn device_rule(plan: &LayerPlan, n_ff: usize) -> Result<Option<DeviceRule>> {
    if plan.input.is_some() {
        bail!(
            Unsupported,
            "input sparsity (input:S) runs on the CPU only (the GPU takes gate, target, cascade, \
             product and dead-neuron modes)"
        );
    }
    let (mut act, mut scale, prod) = match &plan.rule {
        LayerRule::Dense => (f32::NEG_INFINITY, None, -1.0),
        LayerRule::Act(t) => (*t, None, -1.0),
        LayerRule::Scaled { t, scale } => (*t, Some(scale.clone()), -1.0),
        LayerRule::Product(t) => (f32::NEG_INFINITY, None, *t),
        LayerRule::Cascade { t_act, t_prod } => (*t_act, None, *t_prod),
        LayerRule::ScaledCascade { t, scale, t_prod } => (*t, Some(scale.clone()), *t_prod),
        // The device computes gate and up together, so an up-first stage would skip nothing
        // there: it applies the rule's product stage only (fewer bytes skipped, quality at
        // least as good), as `attach` notes.
        LayerRule::UpFirst { t_prod, .. } => (f32::NEG_INFINITY, None, *t_prod),
        other => bail!(
            Unsupported,
            "sparsity rule {other:?} runs on the CPU only (the GPU takes gate, target, cascade, \
             product and dead-neuron modes)"
        ),
    };
    if let Some(live) = &plan.live {
        // Dead neurons: weight 0, and a threshold of at least 0 so that 0 never passes.
        let mut s = scale.unwrap_or_else(|| vec![1.0; n_ff]);
        let mut alive = vec![false; n_ff];
        for &i in live {
            if let Some(a) = alive.get_mut(i as usize) {
                *a = true;
            }
        }
        for (v, a) in s.iter_mut().zip(&alive) {
            if !a {
                *v = 0.0;
            }
        }
        scale = Some(s);
        act = act.max(0.0);
    } else if plan.rule == LayerRule::Dense {
        return Ok(None);
    }
    if scale.as_ref().is_some_and(|s| s.len() != n_ff) {
        bail!(
            InvalidArgument,
            "per-neuron scale of {} for {n_ff} neurons",
            scale.map_or(0, |s| s.len())
        );
    }
    Ok(Some(DeviceRule {
        act_threshold: act,
        neuron_scale: scale,
        product_threshold: prod,
    }))
}

/// The neuron-major down copy type the device reads: `GHOST_GPU_DOWN_COPY=q8_0|q4_0|none`
/// (default Q8_0: exact to 8 bits; Q4_0 halves the bytes at a quality cost to measure; none
/// keeps the model's own down, skipping gate and up rows only).
pub fn device_copy_type() -> Result<Option<GgmlType>> {
    match std::env::var("GHOST_GPU_DOWN_COPY").as_deref() {
        Err(_) | Ok("q8_0") | Ok("") => Ok(Some(GgmlType::Q8_0)),
        Ok("q4_0") => Ok(Some(GgmlType::Q4_0)),
        Ok("none") => Ok(None),
        Ok(other) => bail!(
            InvalidArgument,
            "GHOST_GPU_DOWN_COPY={other}: expected q8_0, q4_0 or none"
        ),
    }
}

/// Installs `plans` on the accelerated `ctx` with the neuron-major `copies` (one per layer,
/// used where the device reads their type; `None`: no copies).
///
/// Input sparsity (`input:S`, which a `budget:P` entry may combine with a neuron rule) has no
/// device kernel: that stage is dropped, with a note, and the neuron rule runs on a dense input
/// (fewer bytes skipped, quality at least as good). Coarse down rows (`coarse:S`) likewise:
/// the device reads every active neuron's row from its own copy.
pub fn attach(ctx: &mut Context, plans: &[LayerPlan], copies: Option<&[DownCopy]>) -> Result<()> {
    let n_ff = ctx.model().config().n_ff;
    if plans.iter().any(|p| p.input.is_some()) {
        eprintln!(
            "ghostcore: input sparsity runs on the CPU only; the GPU applies the rest of the rule"
        );
    }
    if plans.iter().any(|p| p.coarse.is_some()) {
        eprintln!(
            "ghostcore: coarse down rows run on the CPU only; the GPU reads every active \
             neuron's down row from its own copy"
        );
    }
    if plans
        .iter()
        .any(|p| matches!(p.rule, LayerRule::UpFirst { .. }))
    {
        eprintln!(
            "ghostcore: the up-first stage (actw) runs on the CPU only; the GPU applies the \
             product stage of the rule"
        );
    }
    let rules = plans
        .iter()
        .map(|p| device_rule(&p.clone().with_input(None), n_ff))
        .collect::<Result<Vec<_>>>()?;
    let specs: Vec<Option<LayerFfnSparsity<'_>>> = rules
        .iter()
        .enumerate()
        .map(|(il, r)| {
            r.as_ref().map(|r| LayerFfnSparsity {
                act_threshold: r.act_threshold,
                neuron_scale: r.neuron_scale.as_deref(),
                product_threshold: r.product_threshold,
                down_copy: copies
                    .and_then(|c| c.get(il))
                    .filter(|c| matches!(c.ty, GgmlType::Q8_0 | GgmlType::Q4_0))
                    .map(|c| (c.ty, c.data.as_slice())),
            })
        })
        .collect();
    ctx.set_accelerated_ffn_sparsity(Some(&specs))
}

/// What the sparse FFN skipped so far: on an accelerated context from the device counters
/// (bytes from the model's tensor sizes and the row size of the copy each layer reads), else
/// `cpu`.
pub fn current_tally(ctx: &Context, cpu: SparsityTally) -> Result<SparsityTally> {
    let Some(counts) = ctx.accelerated_ffn_counts()? else {
        return Ok(cpu);
    };
    let model = ctx.model();
    let cfg = model.config();
    let n_ff = cfg.n_ff as u64;
    let mut tally = SparsityTally::new(cfg.n_layer);
    for (il, (t, c)) in tally.layers.iter_mut().zip(&counts).enumerate() {
        let lw = model.layer(il);
        let bytes = |w: &crate::model::Weight| w.ty.row_bytes(w.n_cols as u64).unwrap_or(0);
        let (gate_row, up_row) = (bytes(&lw.ffn_gate), bytes(&lw.ffn_up));
        let down_total = bytes(&lw.ffn_down) * lw.ffn_down.n_rows as u64;
        let down_read = match c.down_copy_row_bytes {
            Some(copy_row) => c.down_rows * copy_row,
            None => c.tokens * down_total,
        };
        *t = LayerTally {
            steps: c.tokens,
            active: c.down_rows,
            up_rows: c.up_rows,
            neurons: c.tokens * n_ff,
            bytes_read: c.tokens * n_ff * gate_row + c.up_rows * up_row + down_read,
            bytes_dense: c.tokens * (n_ff * (gate_row + up_row) + down_total),
            ..LayerTally::default()
        };
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparsity::ffn::DownPath;

    fn plan(live: Option<Vec<u32>>, rule: LayerRule) -> LayerPlan {
        LayerPlan {
            live,
            input: None,
            rule,
            coarse: None,
            down: DownPath::Auto,
            paths: Default::default(),
        }
    }

    #[test]
    fn rules_translate_to_device_thresholds() {
        assert_eq!(device_rule(&LayerPlan::DENSE, 4).unwrap(), None);
        let r = device_rule(&plan(None, LayerRule::Act(0.5)), 4)
            .unwrap()
            .unwrap();
        assert_eq!((r.act_threshold, r.product_threshold), (0.5, -1.0));
        assert!(r.neuron_scale.is_none());
        let r = device_rule(&plan(None, LayerRule::Product(0.2)), 4)
            .unwrap()
            .unwrap();
        assert_eq!(r.act_threshold, f32::NEG_INFINITY);
        assert_eq!(r.product_threshold, 0.2);
        // Up first: the device keeps the product stage only.
        let r = device_rule(
            &plan(
                None,
                LayerRule::UpFirst {
                    t: 0.1,
                    scale: vec![1.0; 4],
                    t_prod: 0.3,
                },
            ),
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.act_threshold, f32::NEG_INFINITY);
        assert_eq!(r.product_threshold, 0.3);
        assert!(r.neuron_scale.is_none());
        let r = device_rule(
            &plan(
                None,
                LayerRule::ScaledCascade {
                    t: 0.1,
                    scale: vec![1.0, 2.0, 3.0, 4.0],
                    t_prod: 0.3,
                },
            ),
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.neuron_scale.as_deref(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!((r.act_threshold, r.product_threshold), (0.1, 0.3));
    }

    #[test]
    fn dead_neurons_become_zero_weights() {
        // Dense rule with neurons 1 and 3 dead: weights 1/0/1/0, threshold raised to 0.
        let r = device_rule(&plan(Some(vec![0, 2]), LayerRule::Dense), 4)
            .unwrap()
            .unwrap();
        assert_eq!(r.neuron_scale.as_deref(), Some(&[1.0, 0.0, 1.0, 0.0][..]));
        assert_eq!(r.act_threshold, 0.0);
        let r = device_rule(
            &plan(
                Some(vec![1]),
                LayerRule::Scaled {
                    t: 0.2,
                    scale: vec![5.0, 6.0, 7.0],
                },
            ),
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.neuron_scale.as_deref(), Some(&[0.0, 6.0, 0.0][..]));
        assert_eq!(r.act_threshold, 0.2);
    }

    #[test]
    fn cpu_only_rules_are_unsupported() {
        let e = device_rule(&plan(None, LayerRule::Stat(0.5)), 4).unwrap_err();
        assert!(matches!(e, crate::Error::Unsupported(_)), "{e}");
        let input = plan(None, LayerRule::Act(0.1)).with_input(Some(0.2));
        let e = device_rule(&input, 4).unwrap_err();
        assert!(matches!(e, crate::Error::Unsupported(_)), "{e}");
        let e = device_rule(
            &plan(
                None,
                LayerRule::Scaled {
                    t: 0.1,
                    scale: vec![1.0],
                },
            ),
            4,
        )
        .unwrap_err();
        assert!(matches!(e, crate::Error::InvalidArgument(_)), "{e}");
    }
}
