//! `ghost tokenize`: tokenize text with a model's tokenizer, printed like `llama-tokenize`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use crate::{bail, Result};

/// Tokenize text with the model's tokenizer.
///
/// Unlike llama-tokenize, special-token text such as `<|im_start|>` is NOT parsed by
/// default: pass `--parse-special` to get llama-tokenize's default behaviour. The text is
/// used verbatim (no `\n` escape processing, like llama-tokenize `--no-escape`).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Special tokens: unlike llama-tokenize, text such as <|im_start|> is NOT \
parsed as a special token unless --parse-special is given (llama-tokenize parses by default; its \
--no-parse-special is our default). User-defined tokens are always matched. The text is used \
verbatim: no escape processing (like llama-tokenize --no-escape)."
)]
pub struct Args {
    /// GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text to tokenize.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the text from this file (verbatim bytes; must be UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Do not add the BOS/EOS tokens the model asks for (add_bos_token / add_eos_token).
    #[arg(long)]
    pub no_bos: bool,
    /// Match control tokens written in the text (e.g. `<|im_start|>`) as single tokens.
    /// llama-tokenize does this by default; ghost does it only with this flag.
    #[arg(long)]
    pub parse_special: bool,
    /// Print only the ids, as `[1, 2, 3]` (llama-tokenize --ids).
    #[arg(long)]
    pub ids: bool,
    /// Print only the number of tokens.
    #[arg(long, conflicts_with = "ids")]
    pub count: bool,
    /// Encode the text N times and report load time and tokens/s on stderr.
    #[arg(long, value_name = "N")]
    pub timing: Option<u32>,
}

pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f)?;
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => bail!(
                    InvalidArgument,
                    "{}: not UTF-8 (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                ),
            }
        }
        _ => bail!(InvalidArgument, "give the text with -p TEXT or -f FILE"),
    };
    let t0 = Instant::now();
    let gguf = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&gguf)?;
    let load = t0.elapsed();
    let ids = tok.encode(&text, !args.no_bos, args.parse_special)?;
    if let Some(n) = args.timing {
        let n = n.max(1);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(tok.encode(&text, !args.no_bos, args.parse_special)?);
        }
        let per = t.elapsed().as_secs_f64() / n as f64;
        eprintln!(
            "tokenizer load {:.1} ms; {} bytes -> {} tokens in {:.3} ms per encode ({:.0} tokens/s, {:.2} MB/s), {n} runs, 1 thread",
            load.as_secs_f64() * 1e3,
            text.len(),
            ids.len(),
            per * 1e3,
            ids.len() as f64 / per,
            text.len() as f64 / per / 1e6,
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.count {
        writeln!(out, "{}", ids.len())?;
        return Ok(());
    }
    write_tokens(&tok, &ids, args.ids, &mut out)?;
    Ok(())
}

/// `[1, 2, 3]` with `ids_only`, else one `%6d -> 'piece'` line per token (pieces as raw
/// bytes, special tokens shown), both as llama-tokenize prints them.
pub fn write_tokens(
    tok: &Tokenizer,
    ids: &[u32],
    ids_only: bool,
    out: &mut impl Write,
) -> Result<()> {
    if ids_only {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
        return Ok(());
    }
    for &id in ids {
        write!(out, "{id:6} -> '")?;
        out.write_all(&tok.token_to_piece(id, true)?)?;
        writeln!(out, "'")?;
    }
    Ok(())
}
