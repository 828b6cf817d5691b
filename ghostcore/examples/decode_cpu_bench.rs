//! Decode speed at one thread in thread CPU time, robust against other processes sharing the
//! cores: the model decodes `N` tokens one at a time, `R` times; each repetition reports its
//! CPU time per token, and the best and median repetitions are printed as tokens/s.
//!
//! With `--ab`, the model is loaded twice, once read from its file map and once copied to
//! huge pages, and repetitions alternate between the two in this one process, so both see the
//! same machine state.
//!
//! `cargo run --release -p ghostcore --example decode_cpu_bench -- MODEL [N] [R] [--mapped|--ab]`

use std::sync::Arc;
use std::time::Duration;

use ghostcore::context::{Context, ContextParams};
use ghostcore::gguf::Placement;
use ghostcore::model::{Model, ModelParams};

/// CPU time of this thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn context(path: &str, placement: Placement, n: usize) -> Context {
    let model = Model::load(
        path,
        &ModelParams {
            skip_tokenizer: true,
            placement,
        },
    )
    .expect("model");
    let params = ContextParams {
        n_ctx: n,
        n_batch: n,
        n_threads: 1,
        ..ContextParams::default()
    };
    Context::new(Arc::clone(&model), params).expect("context")
}

/// CPU seconds per token of one pass over `tokens`.
fn pass(ctx: &mut Context, tokens: &[u32]) -> f64 {
    ctx.reset();
    let t0 = thread_cpu_time();
    for &t in tokens {
        ctx.decode(&[t]).expect("decode");
    }
    (thread_cpu_time() - t0).as_secs_f64() / tokens.len() as f64
}

fn summary(name: &str, mut s: Vec<f64>) {
    s.sort_by(f64::total_cmp);
    println!(
        "{name:>8}: best {:7.1} tok/s, median {:7.1} tok/s (CPU time, {} reps)",
        1.0 / s[0],
        1.0 / s[s.len() / 2],
        s.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags: Vec<&str> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let path = pos
        .first()
        .expect("usage: decode_cpu_bench MODEL [N] [R] [--mapped|--ab]");
    let n: usize = pos.get(1).map_or(64, |s| s.parse().expect("N"));
    let reps: usize = pos.get(2).map_or(20, |s| s.parse().expect("R"));
    let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % 1000).collect();
    let mut runs: Vec<(&str, Context, Vec<f64>)> = if flags.contains(&"--ab") {
        vec![
            ("mapped", context(path, Placement::Mapped, n), vec![]),
            ("huge", context(path, Placement::HugePages, n), vec![]),
        ]
    } else if flags.contains(&"--mapped") {
        vec![("mapped", context(path, Placement::Mapped, n), vec![])]
    } else {
        vec![("huge", context(path, Placement::HugePages, n), vec![])]
    };
    for (_, ctx, _) in runs.iter_mut() {
        pass(ctx, &tokens);
    }
    for r in 0..reps {
        let k = runs.len();
        for i in 0..k {
            // Alternate which placement goes first.
            let j = if r % 2 == 0 { i } else { k - 1 - i };
            let (_, ctx, s) = &mut runs[j];
            let t = pass(ctx, &tokens);
            s.push(t);
        }
    }
    for (name, _, s) in runs {
        summary(name, s);
    }
}
