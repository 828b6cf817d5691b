//! `ghost quantize IN OUT TYPE [--threads N]`: requantize a GGUF model with llama.cpp's
//! mixture rules (e.g. q4_k_m), progress on stderr, a per-type summary at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::quant::quantize::{can_quantize_to, quantize_model};
use crate::quant::recipe::{Ftype, Recipe};
use crate::quant::GgmlType;
use crate::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input GGUF model (any type this engine can dequantize).
    pub input: PathBuf,
    /// Output GGUF path (written atomically).
    pub output: PathBuf,
    /// Target mixture: q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1,
    /// q2_k, q3_k_s, q3_k_m, q3_k_l, f16, bf16, f32.
    pub ftype: String,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Give every quantizable tensor the default type of FTYPE (no per-tensor mixture).
    #[arg(long)]
    pub pure: bool,
    /// Type for output.weight (and for a token embedding that doubles as the output).
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type for token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
    /// No progress bar and no summary (errors are still reported).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let ftype: Ftype = args.ftype.parse()?;
    let tensor_type = |s: &Option<String>| -> Result<Option<GgmlType>> {
        match s {
            None => Ok(None),
            Some(name) => match GgmlType::from_name(name) {
                Some(t) if can_quantize_to(t) => Ok(Some(t)),
                _ => bail!(InvalidArgument, "cannot quantize to tensor type {name:?}"),
            },
        }
    };
    let recipe = Recipe {
        ftype,
        pure: args.pure,
        output_tensor_type: tensor_type(&args.output_tensor_type)?,
        token_embedding_type: tensor_type(&args.token_embedding_type)?,
    };
    if args.input == args.output {
        bail!(
            InvalidArgument,
            "the output path must differ from the input path"
        );
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
            )
            .map_err(|e| crate::Error::Internal(format!("progress template: {e}")))?,
        );
        bar
    };
    let started = Instant::now();
    let summary = quantize_model(&args.input, &args.output, recipe, args.threads, &mut |p| {
        bar.set_length(p.elements_total);
        bar.set_position(p.elements_done);
        bar.set_message(format!(
            "[{}/{}] {} {} -> {}",
            p.done, p.total, p.name, p.source, p.target
        ));
    });
    bar.finish_and_clear();
    let summary = summary?;
    if args.quiet {
        return Ok(());
    }

    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut fallbacks = 0;
    for t in &summary.tensors {
        let e = by_type.entry(t.target.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.bytes;
        fallbacks += t.fallback as usize;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "quantized {} -> {} ({}) in {:.2} s",
        args.input.display(),
        args.output.display(),
        ftype,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "  {} tensors, {:.2} MiB -> {:.2} MiB",
        summary.tensors.len(),
        mib(summary.input_bytes),
        mib(summary.output_bytes)
    );
    for (ty, (n, bytes)) in &by_type {
        eprintln!("  {ty:<6} {n:>5} tensors {:>10.2} MiB", mib(*bytes));
    }
    if fallbacks > 0 {
        eprintln!(
            "  {fallbacks} tensors used a fallback type (row length not a multiple of the block)"
        );
    }
    Ok(())
}
