//! The whole forward pass on a CUDA GPU against the CPU forward pass of the same model.
//! Runs in full on a machine with a GPU (`scripts/gpu-stage.sh`), skips with a printed reason
//! elsewhere.
//!
//! Tolerances: the CPU quantizes activations to Q8_K (256-value blocks) for k-quant weights
//! and Q8_0 for the others; the GPU kernels use Q8_1 (32-value blocks) for every quantized
//! type, and sum in another order. The two are different roundings of the same f32 maths, so
//! logits agree to a few % (more with depth: random-weight models amplify rounding layer after
//! layer), not bit for bit; the argmax must agree except where the CPU's own top two are
//! closer than 2% of the logit range. Which of the two is more accurate is settled against a
//! naive f64 forward pass: the GPU must be at least as close to it as the CPU.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use ghostcore::backend::Device;
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::ffn::FfnObserver;
use ghostcore::model::{Model, ModelParams};
use ghostcore::test_models::find_model;
use ghostcore::Error;

mod naive_forward;

/// Whether this machine has a usable CUDA device (printed when not), checked before any
/// model is built so that the tests cost nothing where they skip.
fn gpu_present() -> bool {
    match ghostcore::backend::cuda::CudaBackend::try_new() {
        Ok(Some(_)) => true,
        Ok(None) => {
            eprintln!("SKIPPED: no CUDA driver or device on this machine");
            false
        }
        Err(e) => panic!("CUDA device present but unusable: {e}"),
    }
}

fn synthetic(shape: &str, ty: &str) -> Arc<Model> {
    synthetic_arch("llama", shape, ty)
}

fn synthetic_arch(arch: &str, shape: &str, ty: &str) -> Arc<Model> {
    naive_forward::synthetic_model(arch, shape, ty, 11)
}

fn context(model: &Arc<Model>, device: Device) -> Context {
    Context::new(
        Arc::clone(model),
        ContextParams {
            n_ctx: 256,
            n_threads: 4,
            // 8-bit activations at every batch size, as the GPU does.
            exact_prefill: false,
            device,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A GPU context, or `None` (printed) where this machine has no usable GPU.
fn gpu_context(model: &Arc<Model>) -> Option<Context> {
    let ctx = context(model, Device::Gpu);
    match ctx.device_description() {
        Some(d) => {
            eprintln!("running on {d}");
            Some(ctx)
        }
        None => {
            eprintln!(
                "SKIPPED: no usable CUDA GPU on this machine (the context fell back to the CPU)"
            );
            None
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Compares one row of logits: relative L2 error and argmax (up to CPU near-ties).
/// Returns the relative error.
fn compare_row(label: &str, cpu: &[f32], gpu: &[f32], tie_frac: f32) -> f64 {
    assert!(
        gpu.iter().all(|v| v.is_finite()),
        "{label}: non-finite GPU logits"
    );
    let num: f64 = cpu
        .iter()
        .zip(gpu)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let den: f64 = cpu.iter().map(|&a| (a as f64).powi(2)).sum();
    let rel = (num / den.max(1e-30)).sqrt();
    let (ac, ag) = (argmax(cpu), argmax(gpu));
    if ac != ag {
        let (lo, hi) = cpu
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let gap = cpu[ac] - cpu[ag];
        assert!(
            gap <= tie_frac * (hi - lo),
            "{label}: GPU argmax {ag} vs CPU {ac}, CPU gap {gap} over a logit range {}",
            hi - lo
        );
    }
    rel
}

#[test]
fn gpu_forward_matches_cpu_on_synthetic_models() {
    if !gpu_present() {
        return;
    }
    for (shape, ty) in [
        ("tiny", "q4_k_m"),
        ("tiny", "q4_0"),
        ("tiny", "q8_0"),
        ("tiny", "f16"),
        ("smollm2", "q8_0"),
        ("llama3-1b", "q4_k_m"),
    ] {
        let model = synthetic(shape, ty);
        let Some(mut gpu) = gpu_context(&model) else {
            return;
        };
        let mut cpu = context(&model, Device::Cpu);
        let n_vocab = model.config().n_vocab;
        let prompt: Vec<u32> = (0..70u32)
            .map(|i| (i * 7919 + 13) % n_vocab as u32)
            .collect();
        // Prompt: logits of every position.
        let c = cpu.decode_all_logits(&prompt).unwrap().to_vec();
        let g = gpu.decode_all_logits(&prompt).unwrap().to_vec();
        let mut worst: f64 = 0.0;
        for j in 0..prompt.len() {
            let r = j * n_vocab..(j + 1) * n_vocab;
            let label = format!("{shape} {ty} prompt position {j}");
            worst = worst.max(compare_row(&label, &c[r.clone()], &g[r], 0.02));
        }
        // Decode: 24 single-token steps, both fed the CPU's greedy choice.
        let mut next = argmax(cpu.logits()) as u32;
        for step in 0..24 {
            cpu.decode(&[next]).unwrap();
            gpu.decode(&[next]).unwrap();
            let label = format!("{shape} {ty} decode step {step}");
            worst = worst.max(compare_row(&label, cpu.logits(), gpu.logits(), 0.02));
            next = argmax(cpu.logits()) as u32;
        }
        eprintln!("{shape} {ty}: worst relative L2 error of the logits {worst:.2e}");
        assert!(worst < 0.1, "{shape} {ty}: relative error {worst}");
        assert_eq!(gpu.n_past(), cpu.n_past());
    }
}

/// A real model (llama.cpp's SmolLM2 Q4_K_M; `gpu-stage.sh` stages a copy cut to its first
/// layers, `smollm2-135m-q4_k_m-4layers.gguf`, when the whole file is too large to carry):
/// greedy tokens on the GPU equal the CPU's.
#[test]
fn gpu_greedy_tokens_match_cpu_on_real_weights() {
    if !gpu_present() {
        return;
    }
    let path = [
        "smollm2-135m-q4_k_m.gguf",
        "smollm2-135m-q4_k_m-4layers.gguf",
    ]
    .iter()
    .find_map(|f| find_model(f));
    let Some(path) = path else { return };
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let Some(mut gpu) = gpu_context(&model) else {
        return;
    };
    let mut cpu = context(&model, Device::Cpu);
    let tok = model.tokenizer().unwrap();
    let prompt = tok.encode("The capital of France is", true, false).unwrap();
    cpu.decode(&prompt).unwrap();
    gpu.decode(&prompt).unwrap();
    let mut agree = 0;
    let steps = 32;
    for step in 0..steps {
        let label = format!("{} step {step}", path.display());
        compare_row(&label, cpu.logits(), gpu.logits(), 0.02);
        let (c, g) = (argmax(cpu.logits()), argmax(gpu.logits()));
        agree += (c == g) as usize;
        cpu.decode(&[c as u32]).unwrap();
        gpu.decode(&[c as u32]).unwrap();
    }
    eprintln!(
        "{}: greedy argmax agreement {agree}/{steps}",
        path.display()
    );
}

#[test]
fn gpu_context_errors_leave_it_usable() {
    if !gpu_present() {
        return;
    }
    let model = synthetic("tiny", "q4_k_m");
    let Some(mut gpu) = gpu_context(&model) else {
        return;
    };
    let n_vocab = model.config().n_vocab as u32;
    // A token outside the vocabulary and an overflowing batch are refused, nothing stored.
    assert!(matches!(
        gpu.decode(&[1, n_vocab]),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(gpu.n_past(), 0);
    let too_long = vec![1u32; gpu.n_ctx() + 1];
    assert!(matches!(
        gpu.decode(&too_long),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(gpu.n_past(), 0);
    // CPU-only hooks are refused with a clear error; clearing them is fine.
    struct Counter;
    impl FfnObserver for Counter {
        fn observe(&mut self, _: usize, _: usize, _: &[f32], _: &[f32]) {}
    }
    assert!(matches!(
        gpu.set_ffn_observer(Some(Box::new(Counter))),
        Err(Error::Unsupported(_))
    ));
    assert!(gpu.set_ffn_observer(None).is_ok());
    assert!(gpu.set_decode_ffn(0, None).is_ok());
    gpu.decode(&[1, 2, 3]).unwrap();
    assert_eq!(gpu.n_past(), 3);
    // After a reset the same tokens give the same logits (the cache is overwritten).
    let first = gpu.logits().to_vec();
    gpu.reset();
    gpu.decode(&[1, 2, 3]).unwrap();
    assert_eq!(first, gpu.logits());
}

/// A prompt run as batches (`gc_matmul_*`, 64 tokens a batch) gives the logits of the same
/// tokens run one by one (`gc_matvec_*`, replayed from the recorded CUDA graph): the kernels
/// promise the same arithmetic per token, up to the attention's split order.
#[test]
fn gpu_batched_prompt_equals_token_by_token() {
    if !gpu_present() {
        return;
    }
    for ty in ["q4_k_m", "f16"] {
        let model = synthetic("tiny", ty);
        let Some(mut batched) = gpu_context(&model) else {
            return;
        };
        let mut single = context(&model, Device::Gpu);
        let n_vocab = model.config().n_vocab;
        let prompt: Vec<u32> = (0..100u32).map(|i| (i * 31 + 5) % n_vocab as u32).collect();
        let all = batched.decode_all_logits(&prompt).unwrap().to_vec();
        let mut worst = 0.0f32;
        for (j, &t) in prompt.iter().enumerate() {
            single.decode(&[t]).unwrap();
            let row = &all[j * n_vocab..(j + 1) * n_vocab];
            for (a, b) in row.iter().zip(single.logits()) {
                worst = worst.max((a - b).abs());
            }
        }
        let scale = all.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "tiny {ty}: batched vs one-by-one (graph replay), worst |difference| {worst:e} (logit scale {scale})"
        );
        // The projections are bit-identical (gc_matmul vs gc_matvec); attention splits its
        // positions differently when replayed from a graph (fixed 64-position splits).
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "tiny {ty}: batched prompt differs by {worst}"
        );
        // `Last` after a batched prompt is the last row of `All`.
        batched.reset();
        batched.decode(&prompt).unwrap();
        assert_eq!(batched.logits(), &all[(prompt.len() - 1) * n_vocab..]);
    }
}

/// GPU and CPU 8-bit paths against the exact f64 forward pass of the same weights: the GPU
/// (Q8_1 activations in 32-value blocks) must be at least as accurate as the CPU (Q8_K in
/// 256-value blocks for k-quants, Q8_0 otherwise), up to 20% slack.
#[test]
fn gpu_forward_is_as_accurate_as_cpu_against_f64_reference() {
    if !gpu_present() {
        return;
    }
    for (arch, ty) in [
        ("llama", "q4_k_m"),
        ("llama", "q4_0"),
        ("llama", "q8_0"),
        ("llama", "f16"),
        ("qwen2", "q4_k_m"),
    ] {
        let model = synthetic_arch(arch, "tiny", ty);
        let Some(mut gpu) = gpu_context(&model) else {
            return;
        };
        let mut cpu = context(&model, Device::Cpu);
        let n_vocab = model.config().n_vocab;
        let tokens: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % n_vocab as u32).collect();
        let reference = naive_forward::naive_forward(&model, &tokens);
        let g = gpu.decode_all_logits(&tokens).unwrap().to_vec();
        let c = cpu.decode_all_logits(&tokens).unwrap().to_vec();
        let err = |ours: &[f32]| {
            let mut worst = 0.0f64;
            for (p, r) in reference.iter().enumerate() {
                for (i, &v) in r.iter().enumerate() {
                    worst = worst.max((ours[p * n_vocab + i] as f64 - v).abs());
                }
            }
            worst
        };
        let (eg, ec) = (err(&g), err(&c));
        eprintln!("tiny {arch} {ty}: max |logit - f64 reference|: GPU {eg:.5}, CPU {ec:.5}");
        assert!(
            eg <= 1.2 * ec + 1e-4,
            "tiny {arch} {ty}: GPU {eg} vs CPU {ec}"
        );
    }
}

/// Decode steps replayed from the recorded CUDA graph equal steps launched one kernel at a
/// time (`GHOST_CUDA_GRAPHS=0`), across positions where the attention plan changes, and
/// after a reset.
#[test]
fn gpu_graph_replay_equals_plain_launches() {
    if !gpu_present() {
        return;
    }
    let model = synthetic("tiny", "q4_k_m");
    let Some(mut replayed) = gpu_context(&model) else {
        return;
    };
    std::env::set_var("GHOST_CUDA_GRAPHS", "0");
    let mut plain = context(&model, Device::Gpu);
    std::env::remove_var("GHOST_CUDA_GRAPHS");
    let n_vocab = model.config().n_vocab as u32;
    for round in 0..2 {
        replayed.reset();
        plain.reset();
        for i in 0..200u32 {
            let t = (i * 7 + round * 3) % n_vocab;
            replayed.decode(&[t]).unwrap();
            plain.decode(&[t]).unwrap();
            let (a, b) = (replayed.logits(), plain.logits());
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
            let worst = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            // Same kernels and inputs; only the attention's split plan differs, whose
            // rounding can move an 8-bit activation by one step now and then.
            assert!(
                worst <= 1e-2 * scale,
                "round {round} position {i}: graph replay differs by {worst} (scale {scale})"
            );
        }
    }
}

/// The sparse decode FFN on the GPU against the CPU's sparse FFN with the same per-layer
/// plans (thresholds at each layer's observed median |act| and a quantile of |act·up|, with
/// and without per-neuron weights): logits agree as closely as the dense paths do, the share
/// of neurons skipped per layer agrees up to threshold-edge flips, counting stops when the
/// sparse FFN is switched off, and modes the device cannot evaluate are refused.
#[test]
fn gpu_sparse_decode_matches_cpu_sparse_decode() {
    use ghostcore::sparsity::accelerated::{attach as attach_gpu, current_tally};
    use ghostcore::sparsity::engine::{attach, build_down_copies, install, uninstall};
    use ghostcore::sparsity::{DownPath, LayerPlan, LayerRule};
    use std::sync::Mutex;
    if !gpu_present() {
        return;
    }
    let model = synthetic("llama3-1b", "q4_k_m");
    let (n_vocab, n_layer, n_ff) = {
        let c = model.config();
        (c.n_vocab, c.n_layer, c.n_ff)
    };
    let prompt: Vec<u32> = (0..12u32)
        .map(|i| (i * 7919 + 13) % n_vocab as u32)
        .collect();

    // Each layer's |act| and |act·up| over the prompt, from a dense CPU run.
    #[derive(Default)]
    struct Seen(Vec<(Vec<f32>, Vec<f32>)>);
    struct Obs(Arc<Mutex<Seen>>);
    impl FfnObserver for Obs {
        fn observe(&mut self, layer: usize, _: usize, act: &[f32], up: &[f32]) {
            let mut s = self.0.lock().unwrap();
            if s.0.len() <= layer {
                s.0.resize_with(layer + 1, Default::default);
            }
            s.0[layer].0.extend(act.iter().map(|a| a.abs()));
            s.0[layer]
                .1
                .extend(act.iter().zip(up).map(|(a, u)| (a * u).abs()));
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut probe = context(&model, Device::Cpu);
    probe
        .set_ffn_observer(Some(Box::new(Obs(seen.clone()))))
        .unwrap();
    probe.decode(&prompt).unwrap();
    let quantile = |v: &[f32], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * q) as usize]
    };
    let seen = seen.lock().unwrap();
    assert_eq!(seen.0.len(), n_layer);
    let scale: Vec<f32> = (0..n_ff).map(|i| 0.5 + (i % 7) as f32 / 6.0).collect();
    let cascade: Vec<LayerPlan> = seen
        .0
        .iter()
        .map(|(act, prod)| LayerPlan {
            live: None,
            input: None,
            coarse: None,
            rule: LayerRule::Cascade {
                t_act: quantile(act, 0.3),
                t_prod: quantile(prod, 0.5),
            },
            down: DownPath::Auto,
            paths: Default::default(),
        })
        .collect();
    let scaled: Vec<LayerPlan> = seen
        .0
        .iter()
        .enumerate()
        .map(|(il, (act, _))| LayerPlan {
            // Every third layer dense; the others by |act| times a per-neuron weight.
            live: None,
            input: None,
            coarse: None,
            rule: if il % 3 == 2 {
                LayerRule::Dense
            } else {
                LayerRule::Scaled {
                    t: quantile(act, 0.5),
                    scale: scale.clone(),
                }
            },
            down: DownPath::Auto,
            paths: Default::default(),
        })
        .collect();
    let copies = Arc::new(build_down_copies(&model, None).unwrap().0);

    for (label, plans) in [("cascade", &cascade), ("scaled", &scaled)] {
        let Some(mut gpu) = gpu_context(&model) else {
            return;
        };
        let mut cpu = context(&model, Device::Cpu);
        let hc = install(&mut cpu, plans.clone(), Some(copies.clone())).unwrap();
        attach_gpu(&mut gpu, plans, Some(&copies[..])).unwrap();
        cpu.decode(&prompt).unwrap();
        gpu.decode(&prompt).unwrap();
        let mut worst: f64 = 0.0;
        let mut next = argmax(cpu.logits()) as u32;
        for step in 0..16 {
            cpu.decode(&[next]).unwrap();
            gpu.decode(&[next]).unwrap();
            let what = format!("{label} decode step {step}");
            worst = worst.max(compare_row(&what, cpu.logits(), gpu.logits(), 0.02));
            next = argmax(cpu.logits()) as u32;
        }
        let tc = hc.tally();
        let tg = current_tally(&gpu, ghostcore::sparsity::SparsityTally::new(n_layer)).unwrap();
        let (sc, sg) = (tc.sparsity(), tg.sparsity());
        eprintln!(
            "{label}: neuron sparsity CPU {:.1}% GPU {:.1}%, FFN bytes skipped CPU {:.1}% GPU {:.1}%, worst relative L2 error {worst:.2e}",
            100.0 * sc,
            100.0 * sg,
            100.0 * tc.bytes_skipped(),
            100.0 * tg.bytes_skipped()
        );
        assert_eq!(
            tg.layers[0].steps, 16,
            "GPU counted {} steps",
            tg.layers[0].steps
        );
        assert!(worst < 0.1, "{label}: relative error {worst}");
        assert!(
            (0.1..0.9).contains(&sc),
            "{label}: CPU sparsity {sc} outside the tested range"
        );
        for (l, (a, b)) in tc
            .layer_sparsity()
            .iter()
            .zip(tg.layer_sparsity())
            .enumerate()
        {
            assert!(
                (a - b).abs() < 0.08,
                "{label} layer {l}: CPU {a} vs GPU {b}"
            );
        }
        // Switched off: the GPU decodes dense again and stops counting.
        uninstall(&mut gpu).unwrap();
        gpu.decode(&[next]).unwrap();
        let after = current_tally(&gpu, ghostcore::sparsity::SparsityTally::new(n_layer)).unwrap();
        assert_eq!(after.layers[0].steps, 16);
    }

    // Modes the device cannot evaluate.
    let Some(mut gpu) = gpu_context(&model) else {
        return;
    };
    for mode in ["stat:0.5", "input:0.2"] {
        let e = attach(
            &mut gpu,
            None,
            mode,
            ghostcore::sparsity::PathPolicy::Fastest,
        );
        assert!(
            matches!(
                e,
                Err(Error::Unsupported(_)) | Err(Error::InvalidArgument(_))
            ),
            "{mode}: {e:?}"
        );
    }
}
