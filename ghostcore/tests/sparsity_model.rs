//! The sparse FFN inside the real forward pass (SmolLM2 Q4_K_M).

use std::sync::Arc;

use ghostcore::context::{Context, ContextParams};
use ghostcore::model::{Model, ModelParams};
use ghostcore::sparsity::engine::{build_down_copies, exact_downs_cover, install, uninstall};
use ghostcore::sparsity::{DownPath, LayerPlan, LayerRule, PathPolicy};
use ghostcore::test_models::{find_model, SMOLLM2_Q4_K_M};
use ghostcore::tokenizer::Tokenizer;

fn setup() -> Option<(Arc<Model>, Vec<u32>)> {
    let path = find_model(SMOLLM2_Q4_K_M)?;
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let text = std::fs::read_to_string(
        ghostcore::test_models::workspace_root()
            .join("tests/data/sparsity/heldout-node-stream.txt"),
    )
    .unwrap();
    let ids = tok.encode(&text, false, false).unwrap();
    Some((model, ids[..48].to_vec()))
}

fn logits(ctx: &mut Context, ids: &[u32]) -> Vec<f32> {
    ctx.reset();
    ctx.decode_all_logits(ids).unwrap().to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn top1_agreement(a: &[f32], b: &[f32], n_vocab: usize) -> f64 {
    let rows = a.len() / n_vocab;
    let same = (0..rows)
        .filter(|&r| {
            let s = r * n_vocab..(r + 1) * n_vocab;
            argmax(&a[s.clone()]) == argmax(&b[s])
        })
        .count();
    same as f64 / rows as f64
}

#[test]
fn sparse_ffn_in_the_model() {
    let Some((model, ids)) = setup() else {
        return;
    };
    let n_layer = model.config().n_layer;
    let mut ctx = Context::new(
        model.clone(),
        ContextParams {
            n_ctx: 64,
            n_batch: 64,
            n_threads: 2,
            // The decode path's arithmetic (8-bit activations) in batches too, so the
            // dense and sparse runs differ only by the FFN.
            exact_prefill: false,
            ..Default::default()
        },
    )
    .unwrap();
    let dense = logits(&mut ctx, &ids);
    ctx.set_decode_ffn_in_batches(true);
    let (copies, worst) = build_down_copies(&model, None).unwrap();
    eprintln!(
        "neuron-major down copies: {} (worst rel RMSE {worst:.4})",
        copies[0].ty
    );
    let copies = Arc::new(copies);

    // 1. Every threshold at zero, with and without a zero input threshold (which installs
    //    the input-major gate/up copies): exactly the dense logits.
    for rule in [
        LayerRule::Act(0.0),
        LayerRule::Product(0.0),
        LayerRule::Cascade {
            t_act: 0.0,
            t_prod: 0.0,
        },
    ] {
        for input in [None, Some(0.0)] {
            let plans = vec![LayerPlan::new(None, rule.clone()).with_input(input); n_layer];
            let h = install(&mut ctx, plans, Some(copies.clone())).unwrap();
            let sparse = logits(&mut ctx, &ids);
            assert_eq!(
                max_abs_diff(&sparse, &dense),
                0.0,
                "{rule:?}, input {input:?} with zero thresholds differs from dense"
            );
            assert_eq!(h.tally().bytes_skipped(), 0.0);
            uninstall(&mut ctx).unwrap();
        }
    }

    // 2. An empty dead mask costs nothing (no live list at all) and a one-neuron mask of a
    //    neuron whose contribution is zeroed stays within tolerance.
    assert_eq!(
        LayerPlan::live_from_dead(&vec![false; model.config().n_ff]),
        None
    );

    // 3. The neuron-major copy forced everywhere: close to dense (requantization only).
    let mut plan = LayerPlan::new(None, LayerRule::Dense);
    plan.down = DownPath::NeuronMajor;
    install(&mut ctx, vec![plan; n_layer], Some(copies.clone())).unwrap();
    let forced = logits(&mut ctx, &ids);
    let n_vocab = model.config().n_vocab;
    let mean = mean_abs_diff(&forced, &dense);
    let agree = top1_agreement(&forced, &dense, n_vocab);
    eprintln!("neuron-major down everywhere: mean |Δlogit| {mean:.4}, top-1 agreement {agree:.3}");
    assert!(mean > 0.0 && mean < 0.5, "{mean}");
    assert!(agree >= 0.8, "{agree}");
    uninstall(&mut ctx).unwrap();

    // 4. Real sparsity: a 0.05 GhostGate threshold skips neurons and stays close.
    let h = install(
        &mut ctx,
        vec![LayerPlan::new(None, LayerRule::Act(0.05)); n_layer],
        Some(copies.clone()),
    )
    .unwrap();
    let sparse = logits(&mut ctx, &ids);
    let t = h.tally();
    eprintln!(
        "gate:0.05 sparsity {:.3}, bytes skipped {:.3}, max |Δlogit| {:.3}",
        t.sparsity(),
        t.bytes_skipped(),
        max_abs_diff(&sparse, &dense)
    );
    assert!(t.sparsity() > 0.02);
    assert_eq!(t.layers[0].steps, ids.len() as u64);
    uninstall(&mut ctx).unwrap();

    // 5. Input sparsity with the product stage: the zeroed inputs' gate and up columns are
    //    really skipped (SmolLM2's gate and up are Q5_0, read through the input-major
    //    copies, taken by fewest bytes: by time, on AVX2 with two threads, they are not),
    //    and the logits stay close.
    let plan = LayerPlan::new(None, LayerRule::Product(0.001))
        .with_input(Some(0.02))
        .with_paths(PathPolicy::FewestBytes);
    let h = install(&mut ctx, vec![plan; n_layer], Some(copies.clone())).unwrap();
    let sparse = logits(&mut ctx, &ids);
    let t = h.tally();
    let agree = top1_agreement(&sparse, &dense, n_vocab);
    eprintln!(
        "input 0.02 + product 0.001: sparsity {:.3}, bytes skipped {:.3}, top-1 agreement {agree:.3}",
        t.sparsity(),
        t.bytes_skipped()
    );
    // At 2–3% neuron sparsity every down copy reads more than the dense down, so the bytes
    // skipped are gate and up columns.
    assert!(t.sparsity() < 0.05 && t.bytes_skipped() > 0.03, "{t:?}");
    assert!(agree >= 0.8, "{agree}");
    uninstall(&mut ctx).unwrap();

    // 6. No requantized copies at all: every down of this Q4_K_M file (Q4_K and Q6_K) has
    //    an exact copy, built at install, so a sparse rule still skips down bytes, about as
    //    many as with the requantized copies available too (per token and layer the path
    //    with the least bytes × time per byte is taken: a Q8_0 row can win where a group has
    //    few active neurons), and the logits stay close to that run's. Paths by fewest
    //    bytes: which path is fastest depends on the CPU, the bytes do not.
    assert!(exact_downs_cover(&model));
    let plan = LayerPlan::new(None, LayerRule::Product(0.1)).with_paths(PathPolicy::FewestBytes);
    let with = install(&mut ctx, vec![plan.clone(); n_layer], Some(copies.clone())).unwrap();
    let given = logits(&mut ctx, &ids);
    uninstall(&mut ctx).unwrap();
    let h = install(&mut ctx, vec![plan; n_layer], None).unwrap();
    let without = logits(&mut ctx, &ids);
    let t = h.tally();
    let (b_without, b_with) = (t.bytes_skipped(), with.tally().bytes_skipped());
    eprintln!("product 0.1: sparsity {:.3}, bytes skipped {b_without:.4} exact copies only, {b_with:.4} with requantized copies too", t.sparsity());
    assert!(t.sparsity() > 0.5 && b_without > 0.05, "{t:?}");
    assert!(
        (b_without - b_with).abs() < 0.25 * b_with,
        "{b_without} vs {b_with}"
    );
    // The two differ by rounding only (8-bit coefficients of the exact kernels against the
    // Q8_0 copy's f32 axpy where it was taken, and the copy's requantization): they stay
    // closer to each other than either is to dense.
    let mean = mean_abs_diff(&given, &without);
    let agree = top1_agreement(&given, &without, n_vocab);
    let (d_without, d_given) = (
        mean_abs_diff(&without, &dense),
        mean_abs_diff(&given, &dense),
    );
    eprintln!(
        "exact copies only vs with requantized copies: mean |Δlogit| {mean:.4}, top-1 agreement {agree:.3}; vs dense {d_without:.4} / {d_given:.4}"
    );
    assert!(mean < 0.75 * d_without.min(d_given), "{mean}");
    assert!(agree >= 0.75, "{agree}");
    uninstall(&mut ctx).unwrap();
}
