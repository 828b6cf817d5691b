//! `ghost`: the GhostCore command-line tool. Each subcommand lives in `ghostcore::cli::<name>`.

use clap::{Parser, Subcommand};
use ghostcore::cli;

#[derive(Parser)]
#[command(
    name = "ghost",
    version,
    about = "GhostCore: GGUF inference with activation sparsity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's metadata and tensor table.
    Inspect(cli::inspect::Args),
    /// Tokenize text with a model's tokenizer.
    Tokenize(cli::tokenize::Args),
    /// Quantize a GGUF model (e.g. to q4_k_m).
    Quantize(cli::quantize::Args),
    /// Generate text from a prompt.
    Run(cli::run::Args),
    /// Interactive chat with the model's chat template.
    Chat(cli::chat::Args),
    /// Perplexity over a text file, as llama-perplexity computes it.
    Perplexity(cli::perplexity::Args),
    /// Prefill and decode speed, printed like llama-bench.
    Bench(cli::bench::Args),
    /// Calibrate activation sparsity on a corpus and write the sidecar file.
    Calibrate(cli::calibrate::Args),
    /// Sweep sparsity modes and thresholds: quality vs bytes skipped vs speed.
    Sweep(cli::sweep::Args),
    /// Write a synthetic model with random weights (any shape) for speed and scale tests.
    Synth(cli::synth::Args),
    /// Measure this CPU's sparse path costs at a model's shape (cached; used by decode).
    Tune(cli::tune::Args),
}

fn main() {
    let args = Cli::parse();
    let res = match args.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Quantize(a) => cli::quantize::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Chat(a) => cli::chat::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Calibrate(a) => cli::calibrate::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Synth(a) => cli::synth::run(a),
        Command::Tune(a) => cli::tune::run(a),
    };
    if let Err(e) = res {
        eprintln!("ghost: error: {e}");
        std::process::exit(1);
    }
}
