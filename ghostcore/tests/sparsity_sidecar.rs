//! Sidecar round trip, corruption and model-mismatch handling.

use ghostcore::gguf::{Array, GgufFile, GgufWriter, Value};
use ghostcore::quant::GgmlType;
use ghostcore::sparsity::sidecar::interpolate_threshold;
use ghostcore::sparsity::{
    model_checksum, resolve_plans, BudgetEntry, CalibrationStats, DownCopy, LayerRule, Score,
    Sidecar, TARGETS,
};
use ghostcore::Error;

const N_LAYER: usize = 2;
const N_EMBD: usize = 8;
const N_FF: usize = 16;

fn f32_bytes(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(|x| x.to_le_bytes()).collect()
}

/// A tiny llama-shaped model file holding only FFN tensors (all the checksum reads).
fn tiny_model(seed: f32) -> std::sync::Arc<GgufFile> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    for i in 0..N_LAYER {
        for (k, dims) in [
            ("ffn_gate", [N_EMBD as u64, N_FF as u64]),
            ("ffn_up", [N_EMBD as u64, N_FF as u64]),
            ("ffn_down", [N_FF as u64, N_EMBD as u64]),
        ] {
            let data = f32_bytes((0..N_EMBD * N_FF).map(|j| seed + j as f32 * 0.01 + i as f32));
            w.add_tensor(format!("blk.{i}.{k}.weight"), GgmlType::F32, &dims, data)
                .unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn calibrated(model: &GgufFile) -> Sidecar {
    let mut stats = CalibrationStats::new(N_LAYER, N_EMBD, N_FF, 0.01);
    stats.sample_stride = 1;
    for t in 0..50 {
        for l in 0..N_LAYER {
            let x: Vec<f32> = (0..N_EMBD)
                .map(|i| ((t * 7 + i) % 5) as f32 - 2.0)
                .collect();
            // Neuron 3 never fires in layer 1.
            let a: Vec<f32> = (0..N_FF)
                .map(|j| {
                    if l == 1 && j == 3 {
                        0.0
                    } else {
                        ((t * 13 + j * 3) % 17) as f32 / 17.0 - 0.3
                    }
                })
                .collect();
            let u: Vec<f32> = (0..N_FF).map(|j| ((t + j) % 7) as f32 - 3.0).collect();
            stats.observe(l, &x, &a, &u);
        }
    }
    let mut s = Sidecar::from_stats(model, &stats, "synthetic").unwrap();
    s.budget.push(BudgetEntry {
        layer_levels: None,
        max_ppl_increase_pct: 2.0,
        mode: "cascade:0.2:0.4".into(),
        measured_ppl_increase_pct: 1.7,
        measured_ppl_ci95_pct: Some((0.9, 2.5)),
        bytes_skipped: 0.27,
    });
    s.budget.push(BudgetEntry {
        layer_levels: Some(vec![(0.0, 0.0), (0.3, 0.55)]),
        max_ppl_increase_pct: 5.0,
        mode: "cascade:0.150:0.275:upw".into(),
        measured_ppl_increase_pct: 4.1,
        measured_ppl_ci95_pct: Some((3.0, 5.2)),
        bytes_skipped: 0.31,
    });
    s.down_copies = Some(
        (0..N_LAYER)
            .map(|l| DownCopy {
                ty: GgmlType::F32,
                data: f32_bytes((0..N_FF * N_EMBD).map(|j| j as f32 - l as f32)),
            })
            .collect(),
    );
    s
}

#[test]
fn round_trip_preserves_everything() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    assert!(s.layers[1].dead[3]);
    assert_eq!(s.layers[1].n_dead(), 1);
    assert_eq!(s.targets, TARGETS.to_vec());
    let dir = std::env::temp_dir().join(format!("ghost-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.ghost");
    s.write_file(&path).unwrap();
    let back = Sidecar::load(&path, &model).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.budget_for(2.5).unwrap().mode, "cascade:0.2:0.4");
    assert!(back.budget_for(1.0).is_none());
    assert_eq!(
        back.budget_for(5.0).unwrap().layer_levels,
        Some(vec![(0.0, 0.0), (0.3, 0.55)])
    );
    assert!(back.layers[0].thresholds(Score::Act).len() == TARGETS.len());
    std::fs::remove_dir_all(&dir).ok();
}

/// The up-first score's thresholds round-trip and resolve into up-first rules; a sidecar
/// without them (written before that score existed) still loads, and asking it for `actw`
/// is an error that says to calibrate again, while its other modes still resolve.
#[test]
fn up_first_thresholds_resolve_and_older_sidecars_lack_them() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    let back = Sidecar::from_gguf(&GgufFile::from_bytes(s.to_bytes().unwrap()).unwrap()).unwrap();
    assert_eq!(back.layers[0].thr_actw.len(), TARGETS.len());
    assert!(back.layers[0].thr_actw.iter().any(|&t| t > 0.0));
    let plans = resolve_plans(
        &"cascade:0.2:0.4:actw".parse().unwrap(),
        Some(&back),
        N_LAYER,
    )
    .unwrap();
    match &plans[1].rule {
        LayerRule::UpFirst { t, scale, t_prod } => {
            assert!(*t > 0.0 && *t_prod > 0.0);
            assert_eq!(scale, &back.layers[1].mean_abs_act);
        }
        other => panic!("expected an up-first rule, got {other:?}"),
    }

    // `auto`: per layer, the side whose first stage lost less on the calibration sample.
    let mut forced = back.clone();
    let n_t = TARGETS.len();
    forced.layers[0].loss_actw = vec![0.01; n_t];
    forced.layers[0].loss_upw = vec![0.02; n_t];
    forced.layers[1].loss_actw = vec![0.03; n_t];
    forced.layers[1].loss_upw = vec![0.02; n_t];
    let plans = resolve_plans(
        &"cascade:0.2:0.4:auto".parse().unwrap(),
        Some(&forced),
        N_LAYER,
    )
    .unwrap();
    assert!(
        matches!(plans[0].rule, LayerRule::UpFirst { .. }),
        "{:?}",
        plans[0]
    );
    assert!(
        matches!(plans[1].rule, LayerRule::ScaledCascade { .. }),
        "{:?}",
        plans[1]
    );

    let mut old = s.clone();
    old.layers.iter_mut().for_each(|l| {
        l.thr_actw.clear();
        l.loss_upw.clear();
        l.loss_actw.clear();
    });
    let file = GgufFile::from_bytes(old.to_bytes().unwrap()).unwrap();
    assert!(file.tensor_info("blk.0.sparsity.thr_actw").is_none());
    assert!(file.tensor_info("blk.0.sparsity.loss_upw").is_none());
    let old = Sidecar::from_gguf(&file).unwrap();
    assert!(old.layers[0].thr_actw.is_empty());
    for m in [
        "target:0.3:actw",
        "cascade:0.2:0.4:actw",
        "cascade:0.2:0.4:auto",
    ] {
        match resolve_plans(&m.parse().unwrap(), Some(&old), N_LAYER) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("calibrate"), "{msg}"),
            other => panic!("{m}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(resolve_plans(&"cascade:0.2:0.4:upw".parse().unwrap(), Some(&old), N_LAYER).is_ok());
}

#[test]
fn mismatched_model_is_refused() {
    let model = tiny_model(0.0);
    let other = tiny_model(0.5);
    assert_ne!(model_checksum(&model), model_checksum(&other));
    let s = calibrated(&model);
    let file = GgufFile::from_bytes(s.to_bytes().unwrap()).unwrap();
    let parsed = Sidecar::from_gguf(&file).unwrap();
    assert!(parsed.check_model(&model).is_ok());
    match parsed.check_model(&other) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("another model"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn corrupted_sidecars_are_typed_errors() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    let good = s.to_bytes().unwrap();

    // Truncated file: the GGUF reader's error.
    let cut = good[..good.len() / 2].to_vec();
    match GgufFile::from_bytes(cut) {
        Err(e) => assert!(matches!(Error::from(e), Error::Gguf(_))),
        Ok(_) => panic!("a truncated sidecar was accepted"),
    }

    // A model file is not a sidecar.
    let not_sidecar = tiny_model(0.0);
    assert!(matches!(
        Sidecar::from_gguf(&not_sidecar),
        Err(Error::Format(_))
    ));

    // Semantic corruption: a dead mask holding 7, a non-permutation hot order, NaN stats.
    let mutate = |f: &dyn Fn(&mut Sidecar)| {
        let mut bad = s.clone();
        f(&mut bad);
        let file = GgufFile::from_bytes(bad.to_bytes().unwrap()).unwrap();
        Sidecar::from_gguf(&file)
    };
    let r = mutate(&|b| b.layers[0].hot_order[0] = b.layers[0].hot_order[1]);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");
    let r = mutate(&|b| b.layers[1].mean_abs_up[2] = f32::NAN);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");
    let r = mutate(&|b| b.layers[0].thr_act[0] = -1.0);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");

    // Byte-level: flip the dead-mask byte of layer 0 neuron 0 to 7 by rewriting the tensor.
    let file = GgufFile::from_bytes(good.clone()).unwrap();
    let mut w = GgufWriter::from_file(&file);
    for t in w.tensors_mut().iter_mut() {
        if t.name == "blk.0.sparsity.dead" {
            let mut d = t.data.to_vec();
            d[0] = 7;
            t.data = d.into();
        }
    }
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(matches!(Sidecar::from_gguf(&file), Err(Error::Format(_))));

    // Wrong version.
    let file = GgufFile::from_bytes(good).unwrap();
    let mut w = GgufWriter::from_file(&file);
    w.set_u32("ghost.sidecar.version", 99);
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(matches!(Sidecar::from_gguf(&file), Err(Error::Format(_))));
}

/// A per-layer budget entry resolves to per-layer plans: the `(0, 0)` layer dense, the other
/// a cascade whose thresholds are the sidecar's for that layer's own shares.
#[test]
fn per_layer_budget_resolves_layer_by_layer() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    let plans = resolve_plans(&"budget:5".parse().unwrap(), Some(&s), N_LAYER).unwrap();
    assert_eq!(plans[0].rule, LayerRule::Dense);
    let l1 = &s.layers[1];
    let thr =
        |score: Score, share: f32| interpolate_threshold(&s.targets, l1.thresholds(score), share);
    assert_eq!(
        plans[1].rule,
        LayerRule::ScaledCascade {
            t: thr(Score::UpWeighted, 0.3),
            scale: l1.mean_abs_up.clone(),
            t_prod: thr(Score::Product, 0.55),
        }
    );
    // The uniform entry below it is unaffected.
    let plans = resolve_plans(&"budget:2".parse().unwrap(), Some(&s), N_LAYER).unwrap();
    assert!(matches!(plans[0].rule, LayerRule::Cascade { .. }));
}

/// Per-layer levels and measured intervals: sidecars written without them still load;
/// malformed ones are typed format errors.
#[test]
fn per_layer_levels_are_checked_and_optional() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    let good = s.to_bytes().unwrap();
    let edit = |f: &dyn Fn(&mut GgufWriter)| {
        let file = GgufFile::from_bytes(good.clone()).unwrap();
        let mut w = GgufWriter::from_file(&file);
        f(&mut w);
        let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
        Sidecar::from_gguf(&file)
    };
    // An older sidecar: no level keys at all.
    let old = edit(&|w| {
        w.remove("ghost.budget.1.layer_skip_all");
        w.remove("ghost.budget.1.layer_skip_down");
    })
    .unwrap();
    assert!(old.budget.iter().all(|b| b.layer_levels.is_none()));
    assert!(s.budget.iter().all(|b| b.measured_ppl_ci95_pct.is_some()));
    let old = edit(&|w| {
        w.remove("ghost.budget.measured_ppl_lo_pct");
        w.remove("ghost.budget.measured_ppl_hi_pct");
    })
    .unwrap();
    assert!(old.budget.iter().all(|b| b.measured_ppl_ci95_pct.is_none()));
    let f32s = |v: &[f32]| Value::Array(Array::F32(v.to_vec()));
    let bad: [&dyn Fn(&mut GgufWriter); 7] = [
        &|w| w.remove("ghost.budget.measured_ppl_hi_pct"),
        &|w| w.set("ghost.budget.measured_ppl_lo_pct", f32s(&[0.5])),
        &|w| w.remove("ghost.budget.1.layer_skip_down"),
        &|w| w.set("ghost.budget.1.layer_skip_all", f32s(&[0.0])),
        &|w| w.set("ghost.budget.1.layer_skip_down", f32s(&[0.0, 0.2])),
        &|w| w.set("ghost.budget.1.layer_skip_all", f32s(&[0.0, 1.5])),
        &|w| {
            w.set("ghost.budget.0.layer_skip_all", f32s(&[0.1, 0.1]));
            w.set("ghost.budget.0.layer_skip_down", f32s(&[0.2, 0.2]));
            w.set(
                "ghost.budget.mode",
                Value::Array(Array::String(vec!["target:0.3".into(), "gate:0.1".into()])),
            );
        },
    ];
    for (i, f) in bad.iter().enumerate() {
        let r = edit(*f);
        assert!(matches!(r, Err(Error::Format(_))), "case {i}: {r:?}");
    }
    // Writing levels for the wrong number of layers is refused, not silently truncated.
    let mut wrong = s.clone();
    wrong.budget[1].layer_levels = Some(vec![(0.1, 0.2)]);
    assert!(wrong.to_bytes().is_err());
}

/// Real models: each model's checksum differs, and a sidecar made for one is refused by the
/// other.
#[test]
fn real_models_have_distinct_checksums() {
    let (Some(a), Some(b)) = (
        ghostcore::test_models::find_model(ghostcore::test_models::SMOLLM2_Q4_K_M),
        ghostcore::test_models::find_model(ghostcore::test_models::SMOLLM2_Q4_1),
    ) else {
        return;
    };
    let (a, b) = (GgufFile::open(a).unwrap(), GgufFile::open(b).unwrap());
    assert_ne!(model_checksum(&a), model_checksum(&b));
    assert_eq!(model_checksum(&a), model_checksum(&a));
}

/// Budget entries combining input sparsity with a neuron rule round-trip and resolve to plans
/// carrying both the layer's calibrated input threshold and the rule; an older sidecar whose
/// entry is the input rule alone (`input:S`, the syntax before the rules combined) still
/// resolves, to input thresholds over dense neurons.
#[test]
fn combined_input_budget_entries_round_trip_and_resolve() {
    let model = tiny_model(0.0);
    let mut s = calibrated(&model);
    s.budget = vec![
        BudgetEntry {
            layer_levels: None,
            max_ppl_increase_pct: 1.0,
            mode: "input:0.3".into(),
            measured_ppl_increase_pct: 0.9,
            measured_ppl_ci95_pct: None,
            bytes_skipped: 0.1,
        },
        BudgetEntry {
            layer_levels: None,
            max_ppl_increase_pct: 2.0,
            mode: "input:0.2,target:0.45:product,coarse:0.7".into(),
            measured_ppl_increase_pct: 1.9,
            measured_ppl_ci95_pct: None,
            bytes_skipped: 0.25,
        },
        BudgetEntry {
            layer_levels: Some(vec![(0.0, 0.0), (0.3, 0.55)]),
            max_ppl_increase_pct: 5.0,
            mode: "input:0.1,cascade:0.150:0.275:upw,coarse:0.8".into(),
            measured_ppl_increase_pct: 4.1,
            measured_ppl_ci95_pct: None,
            bytes_skipped: 0.31,
        },
    ];
    let back = Sidecar::from_gguf(&GgufFile::from_bytes(s.to_bytes().unwrap()).unwrap()).unwrap();
    assert_eq!(back, s);
    let input_thr = |il: usize, share: f32| {
        interpolate_threshold(&back.targets, &back.layers[il].thr_input, share)
    };
    let p = resolve_plans(&"budget:1".parse().unwrap(), Some(&back), N_LAYER).unwrap();
    for (il, plan) in p.iter().enumerate() {
        assert_eq!(plan.input, Some(input_thr(il, 0.3)));
        assert_eq!(plan.rule, LayerRule::Dense);
        assert_eq!(plan.coarse, None);
    }
    // Coarse rows below each layer's product threshold at the coarse share.
    let coarse_thr = |il: usize, share: f32| {
        interpolate_threshold(
            &back.targets,
            back.layers[il].thresholds(Score::Product),
            share,
        )
    };
    let p = resolve_plans(&"dead,budget:2".parse().unwrap(), Some(&back), N_LAYER).unwrap();
    for (il, plan) in p.iter().enumerate() {
        assert_eq!(plan.input, Some(input_thr(il, 0.2)));
        let t = interpolate_threshold(
            &back.targets,
            back.layers[il].thresholds(Score::Product),
            0.45,
        );
        assert_eq!(plan.rule, LayerRule::Product(t));
        assert_eq!(plan.coarse, Some(coarse_thr(il, 0.7)));
        assert!(plan.coarse.unwrap() > t);
    }
    // Neuron 3 of layer 1 is dead: `dead` carried into the budget's plans.
    assert!(p[1].live.as_ref().is_some_and(|l| !l.contains(&3)));
    let p = resolve_plans(&"budget:5".parse().unwrap(), Some(&back), N_LAYER).unwrap();
    assert_eq!(p[0].rule, LayerRule::Dense);
    assert!(matches!(p[1].rule, LayerRule::ScaledCascade { .. }));
    assert_eq!(p[1].input, Some(input_thr(1, 0.1)));
    assert_eq!(p[1].coarse, Some(coarse_thr(1, 0.8)));
    // Coarse rows need a sidecar's thresholds, and do not combine with a budget.
    assert!(matches!(
        resolve_plans(
            &"cascade:0.2:0.4,coarse:0.8".parse().unwrap(),
            None,
            N_LAYER
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        "coarse:0.8,budget:2".parse::<ghostcore::sparsity::SparsityMode>(),
        Err(Error::InvalidArgument(_))
    ));
    // The input rule and a budget do not combine.
    assert!(matches!(
        "input:0.2,budget:2".parse::<ghostcore::sparsity::SparsityMode>(),
        Err(Error::InvalidArgument(_))
    ));
}
