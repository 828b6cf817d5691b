//! `ghost chat`: interactive chat with the model's chat template; the history is kept and
//! the KV cache reused for the common prefix of successive renderings.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::context::{Context, ContextParams};
use crate::generate::{generate, GenerateParams, Prompt};
use crate::model::{Model, ModelParams};
use crate::sampling::SamplerParams;
use crate::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: the built-in SmolLM2-135M Q4_K_M).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// System prompt.
    #[arg(short = 's', long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// One chat message.
pub type Message = crate::chat::ChatMessage;

/// Renders `messages` with the model's chat template (or the built-in one llama.cpp would
/// pick for it), ending with the assistant's generation prompt.
pub fn render(model: &Model, messages: &[Message]) -> Result<String> {
    crate::chat::ChatTemplate::for_model(model.gguf())?.render(messages, true)
}

/// The prompt for a single user message (used by `ghost run --chat`).
pub fn render_single_user_turn(model: &Model, user: &str) -> Result<String> {
    render(model, &[Message::new("user", user)])
}

pub fn run(args: Args) -> Result<()> {
    let path = super::run::resolve_model(args.model.as_deref())?;
    let model = Model::load(&path, &ModelParams::default())?;
    let mut ctx = Context::new(
        Arc::clone(&model),
        ContextParams {
            n_ctx: args.ctx_size,
            n_threads: args.threads,
            device: args.device.device(),
            ..Default::default()
        },
    )?;
    let tok = model.tokenizer()?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
    }
    // Tokens currently in the KV cache.
    let mut cached: Vec<u32> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    eprintln!(
        "ghost chat: {} — empty line or Ctrl-D to quit",
        path.display()
    );
    let mut turn = 0u64;
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else { break };
        let line = line?;
        if line.trim().is_empty() {
            break;
        }
        messages.push(Message {
            role: "user".into(),
            content: line,
        });
        let rendered = render(&model, &messages)?;
        let tokens = tok.encode(&rendered, true, true)?;
        let common = cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // Keep at least one token to decode so logits are fresh.
        let keep = common.min(tokens.len().saturating_sub(1));
        if tokens.len() + 1 > ctx.n_ctx() {
            bail!(
                InvalidArgument,
                "conversation no longer fits the context ({} tokens)",
                tokens.len()
            );
        }
        ctx.truncate(keep);
        cached.truncate(keep);
        let params = GenerateParams {
            max_tokens: args.n_predict.min(ctx.n_ctx() - tokens.len()),
            sampling: SamplerParams {
                temperature: args.temp,
                seed: args.seed.wrapping_add(turn),
                ..Default::default()
            },
            ignore_eog: false,
        };
        let mut reply = String::new();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let stats = generate(
            &mut ctx,
            Prompt::Tokens(&tokens[keep..]),
            &params,
            |piece| {
                reply.push_str(piece);
                out.write_all(piece.as_bytes())
                    .and_then(|_| out.flush())
                    .is_ok()
            },
        )?;
        let _ = writeln!(out);
        eprintln!(
            "[{} tokens, {:.1} tok/s]",
            stats.generated_tokens,
            stats.generation_tokens_per_second()
        );
        cached = tokens;
        // The generated tokens are in the cache too, but their re-tokenization may differ:
        // the next turn recomputes from the common prefix.
        messages.push(Message {
            role: "assistant".into(),
            content: reply,
        });
        turn += 1;
    }
    Ok(())
}
