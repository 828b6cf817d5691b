//! `ghost synth`: writes a synthetic llama-architecture model with random weights, for
//! speed and scale tests. Quantized tensors are random *valid* blocks written directly
//! (finite f16 scales of realistic size, random quants); norms are ones. A tokenizer can be
//! copied from a real model (`--tokenizer-from`); without one the file has no tokenizer and
//! is usable by `ghost bench` only.

use std::path::PathBuf;

use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::random::random_tensor;
use crate::quant::recipe::use_more_bits;
use crate::quant::GgmlType;
use crate::sampling::Rng;
use crate::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output GGUF file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Shape: tiny, smollm2, llama3-1b, llama3-3b, llama3-8b.
    #[arg(long, default_value = "smollm2")]
    pub shape: String,
    /// Weight types: q4_k_m, q4_0, q5_0 (the type SmolLM2's gate and up fall back to), q8_0, f16.
    #[arg(long = "type", default_value = "q4_k_m")]
    pub ty: String,
    /// Copy the tokenizer (`tokenizer.*` metadata) from this GGUF model.
    #[arg(long = "tokenizer-from")]
    pub tokenizer_from: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Architecture: llama, or qwen2 (q/k/v biases, NeoX RoPE).
    #[arg(long, default_value = "llama", value_parser = ["llama", "qwen2"])]
    pub arch: String,
}

/// Hyper-parameters of a synthetic model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub rope_base: f32,
}

pub fn shape(name: &str) -> Result<Shape> {
    let s = |n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, rope_base| Shape {
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        n_ff,
        n_vocab,
        rope_base,
    };
    Ok(match name {
        "tiny" => s(256, 2, 4, 2, 512, 512, 10000.0),
        "smollm2" => s(576, 30, 9, 3, 1536, 49152, 100000.0),
        "llama3-1b" => s(2048, 16, 32, 8, 8192, 128256, 500000.0),
        "llama3-3b" => s(3072, 28, 24, 8, 8192, 128256, 500000.0),
        "llama3-8b" => s(4096, 32, 32, 8, 14336, 128256, 500000.0),
        other => bail!(
            InvalidArgument,
            "unknown shape '{other}' (tiny, smollm2, llama3-1b, llama3-3b, llama3-8b)"
        ),
    })
}

/// (matrix type, bumped type) of a weight-type recipe: the bumped type is the output head's
/// and, as in llama.cpp's recipes, that of `attn_v` and `ffn_down` in the layers it gives
/// more bits (`use_more_bits`: the first and last eighth and every third layer between; for
/// Q4_K_M that is Q6_K in about half the layers, Q4_K in the others).
fn recipe(name: &str) -> Result<(GgmlType, GgmlType)> {
    Ok(match name {
        "q4_k_m" => (GgmlType::Q4_K, GgmlType::Q6_K),
        "q4_0" => (GgmlType::Q4_0, GgmlType::Q4_0),
        "q5_0" => (GgmlType::Q5_0, GgmlType::Q5_0),
        "q8_0" => (GgmlType::Q8_0, GgmlType::Q8_0),
        "f16" => (GgmlType::F16, GgmlType::F16),
        other => bail!(
            InvalidArgument,
            "unknown type '{other}' (q4_k_m, q4_0, q5_0, q8_0, f16)"
        ),
    })
}

/// Builds the synthetic model in memory, for architecture `arch`: `llama`, or `qwen2` (the
/// same tensors plus random q/k/v biases; its NeoX RoPE follows from the architecture name).
pub fn build(
    shape: &Shape,
    arch: &str,
    ty: &str,
    tokenizer_from: Option<&GgufFile>,
    seed: u64,
) -> Result<GgufWriter<'static>> {
    if !matches!(arch, "llama" | "qwen2") {
        bail!(
            InvalidArgument,
            "unknown synthetic architecture '{arch}' (llama, qwen2)"
        );
    }
    let (mat, more_bits) = recipe(ty)?;
    for (what, n) in [("n_embd", shape.n_embd), ("n_ff", shape.n_ff)] {
        if n % mat.block_size() != 0 || n % more_bits.block_size() != 0 {
            bail!(
                InvalidArgument,
                "{what} = {n} is not a multiple of the {mat}/{more_bits} block size"
            );
        }
    }
    let head_dim = shape.n_embd / shape.n_head;
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", arch);
    w.set_str("general.name", format!("synthetic {arch} {ty}"));
    w.set_u32("general.alignment", 32);
    let key = |k: &str| format!("{arch}.{k}");
    w.set_u32(key("block_count"), shape.n_layer as u32);
    w.set_u32(key("context_length"), 8192);
    w.set_u32(key("embedding_length"), shape.n_embd as u32);
    w.set_u32(key("feed_forward_length"), shape.n_ff as u32);
    w.set_u32(key("attention.head_count"), shape.n_head as u32);
    w.set_u32(key("attention.head_count_kv"), shape.n_head_kv as u32);
    w.set_u32(key("rope.dimension_count"), head_dim as u32);
    w.set_u32(key("vocab_size"), shape.n_vocab as u32);
    w.set_f32(key("rope.freq_base"), shape.rope_base);
    w.set_f32(key("attention.layer_norm_rms_epsilon"), 1e-5);
    if let Some(src) = tokenizer_from {
        for (k, v) in src.metadata() {
            if k.starts_with("tokenizer.") {
                w.set(k.clone(), v.clone());
            }
        }
    }
    let mut rng = Rng::new(seed);
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect() };
    let (e, f, kv) = (shape.n_embd, shape.n_ff, shape.n_head_kv * head_dim);
    let add = |w: &mut GgufWriter<'static>,
               name: String,
               ty: GgmlType,
               dims: &[u64],
               data: Vec<u8>|
     -> Result<()> {
        w.add_tensor(name, ty, dims, data)?;
        Ok(())
    };
    add(
        &mut w,
        "token_embd.weight".into(),
        mat,
        &[e as u64, shape.n_vocab as u64],
        random_tensor(mat, e * shape.n_vocab, &mut rng)?,
    )?;
    add(
        &mut w,
        "output_norm.weight".into(),
        GgmlType::F32,
        &[e as u64],
        ones(e),
    )?;
    add(
        &mut w,
        "output.weight".into(),
        more_bits,
        &[e as u64, shape.n_vocab as u64],
        random_tensor(more_bits, e * shape.n_vocab, &mut rng)?,
    )?;
    for i in 0..shape.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        add(&mut w, n("attn_norm"), GgmlType::F32, &[e as u64], ones(e))?;
        add(&mut w, n("ffn_norm"), GgmlType::F32, &[e as u64], ones(e))?;
        if arch == "qwen2" {
            for (name, len) in [("attn_q", e), ("attn_k", kv), ("attn_v", kv)] {
                let bias: Vec<u8> = (0..len)
                    .flat_map(|_| ((rng.next_f64() - 0.5) as f32).to_le_bytes())
                    .collect();
                add(
                    &mut w,
                    format!("blk.{i}.{name}.bias"),
                    GgmlType::F32,
                    &[len as u64],
                    bias,
                )?;
            }
        }
        let bumped = if use_more_bits(i as i64, shape.n_layer as i64) {
            more_bits
        } else {
            mat
        };
        for (name, rows, ty) in [
            ("attn_q", e, mat),
            ("attn_k", kv, mat),
            ("attn_v", kv, bumped),
            ("attn_output", e, mat),
        ] {
            add(
                &mut w,
                n(name),
                ty,
                &[e as u64, rows as u64],
                random_tensor(ty, e * rows, &mut rng)?,
            )?;
        }
        for name in ["ffn_gate", "ffn_up"] {
            add(
                &mut w,
                n(name),
                mat,
                &[e as u64, f as u64],
                random_tensor(mat, e * f, &mut rng)?,
            )?;
        }
        add(
            &mut w,
            n("ffn_down"),
            bumped,
            &[f as u64, e as u64],
            random_tensor(bumped, e * f, &mut rng)?,
        )?;
    }
    Ok(w)
}

pub fn run(args: Args) -> Result<()> {
    let shape = shape(&args.shape)?;
    let tok_src = match &args.tokenizer_from {
        Some(p) => Some(GgufFile::open(p)?),
        None => None,
    };
    let w = build(&shape, &args.arch, &args.ty, tok_src.as_deref(), args.seed)?;
    let tmp = args.output.with_extension("gguf.partial");
    w.write_file(&tmp)?;
    std::fs::rename(&tmp, &args.output)?;
    eprintln!(
        "ghost synth: wrote {} ({} shape, {}, {} bytes)",
        args.output.display(),
        args.shape,
        args.ty,
        std::fs::metadata(&args.output)
            .map(|m| m.len())
            .unwrap_or(0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_K_M gives `attn_v` and `ffn_down` Q6_K in llama.cpp's `use_more_bits` layers and Q4_K
    /// in the others (as a real Q4_K_M file has both kinds of down), the other matrices Q4_K
    /// and the output head Q6_K.
    #[test]
    fn q4_k_m_bumps_the_layers_llama_cpp_bumps() {
        let mut sh = shape("tiny").unwrap();
        sh.n_layer = 8;
        let w = build(&sh, "llama", "q4_k_m", None, 1).unwrap();
        let ty = |name: &str| {
            w.tensors()
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.ty)
                .unwrap()
        };
        // 8 layers: the first and last eighth (layers 0 and 7) and every third from layer 1
        // (layers 3 and 6).
        let bumped: Vec<usize> = (0..8)
            .filter(|&i| ty(&format!("blk.{i}.ffn_down.weight")) == GgmlType::Q6_K)
            .collect();
        assert_eq!(bumped, [0, 3, 6, 7]);
        for i in 0..8 {
            let down = ty(&format!("blk.{i}.ffn_down.weight"));
            assert_eq!(ty(&format!("blk.{i}.attn_v.weight")), down);
            if !bumped.contains(&i) {
                assert_eq!(down, GgmlType::Q4_K);
            }
            for m in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                assert_eq!(ty(&format!("blk.{i}.{m}.weight")), GgmlType::Q4_K, "{m}");
            }
        }
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
    }

    /// Random blocks of every type dequantize to finite weights with a spread of a few
    /// hundredths and a mean well below that spread (a biased tensor makes every neuron see
    /// the same dominant term, and the activations degenerate).
    #[test]
    fn random_tensors_are_zero_mean_with_realistic_spread() {
        let mut rng = Rng::new(7);
        let n = 256 * 64;
        for ty in [
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let data = random_tensor(ty, n, &mut rng).unwrap();
            let mut w = vec![0f32; n];
            crate::quant::dequantize_row(ty, &data, &mut w).unwrap();
            assert!(w.iter().all(|v| v.is_finite()), "{ty}");
            let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            assert!((0.005..0.2).contains(&std), "{ty}: std {std}");
            assert!(mean.abs() < 0.15 * std, "{ty}: mean {mean} vs std {std}");
        }
    }
}
