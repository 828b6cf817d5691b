//! Model hyper-parameters, read from GGUF metadata alone.

use crate::gguf::GgufFile;
use crate::{bail, Result};

/// Architectures the forward pass implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "gemma3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama-2/3, Mistral, SmolLM2: RMSNorm, SiLU-gated FFN, interleaved-pair RoPE.
    Llama,
    /// Qwen2: as Llama with q/k/v biases and NeoX RoPE.
    Qwen2,
    /// Gemma 3: GELU-tanh gate, q/k RMS norms, post-attention/FFN norms, scaled
    /// embeddings, sliding-window layers with their own RoPE base, NeoX RoPE.
    Gemma3,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

/// How the two halves of a RoPE rotation pair are laid out within a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs are adjacent elements (2i, 2i+1) (ggml mode 0, Llama GGUFs).
    Normal,
    /// Pairs are (i, i + d/2) (ggml NeoX mode: Qwen2, Gemma).
    Neox,
}

/// FFN gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Architecture,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    pub rope_freq_base: f32,
    /// Linear RoPE scaling factor applied to positions (1.0 = none).
    pub rope_freq_scale: f32,
    /// RoPE base of sliding-window layers (Gemma 3).
    pub rope_freq_base_swa: f32,
    pub activation: Activation,
    /// Sliding-window size; 0 when no layer uses one.
    pub sliding_window: usize,
    /// Every `swa_period`-th layer (1-based) is global; 0 = no sliding layers.
    pub swa_period: usize,
    /// Multiply token embeddings by sqrt(n_embd) (Gemma).
    pub scale_embeddings: bool,
    /// Query scale applied before q·k.
    pub attn_scale: f32,
    /// Final logit soft-capping (`tanh(x / c) * c`), if any.
    pub final_logit_softcap: Option<f32>,
    /// Attention logit soft-capping, if any.
    pub attn_logit_softcap: Option<f32>,
}

impl Config {
    /// Reads the hyper-parameters of a supported architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let arch_name = match file.architecture() {
            Some(a) => a.to_string(),
            None => bail!(Format, "missing general.architecture"),
        };
        let arch = match arch_name.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3" => Architecture::Gemma3,
            other => bail!(
                Unsupported,
                "architecture '{other}' is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            match file.get_u64(&key(k)) {
                Some(v) if v > 0 && v <= (1 << 31) => Ok(v as usize),
                Some(v) => bail!(Format, "{} = {v} is out of range", key(k)),
                None => bail!(Format, "missing metadata key {}", key(k)),
            }
        };
        let opt_f = |k: &str| file.get_f64(&key(k)).map(|v| v as f32);

        let n_embd = req("embedding_length")?;
        let n_layer = req("block_count")?;
        let n_ff = req("feed_forward_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = file
            .get_u64(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            bail!(
                Format,
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            );
        }
        let head_dim_k = match file.get_u64(&key("attention.key_length")) {
            Some(v) => v as usize,
            None => {
                if n_embd % n_head != 0 {
                    bail!(
                        Format,
                        "embedding_length {n_embd} not divisible by head_count {n_head}"
                    );
                }
                n_embd / n_head
            }
        };
        let head_dim_v = file
            .get_u64(&key("attention.value_length"))
            .map(|v| v as usize)
            .unwrap_or(head_dim_k);
        if head_dim_k == 0 || head_dim_v == 0 || head_dim_k > 1024 || head_dim_v > 1024 {
            bail!(Format, "unsupported head size {head_dim_k}/{head_dim_v}");
        }
        let n_rot = file
            .get_u64(&key("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            bail!(
                Format,
                "rope.dimension_count {n_rot} invalid for head size {head_dim_k}"
            );
        }
        let n_ctx_train = file
            .get_u64(&key("context_length"))
            .map(|v| v as usize)
            .unwrap_or(2048);
        let rms_eps = opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
        let rope_freq_base = opt_f("rope.freq_base").unwrap_or(10_000.0);
        let rope_freq_scale = match file.get_str(&key("rope.scaling.type")) {
            Some("linear") => opt_f("rope.scaling.factor").map(|f| 1.0 / f).unwrap_or(1.0),
            Some("none") | None => 1.0,
            Some(other) => bail!(Unsupported, "RoPE scaling type '{other}' is not supported"),
        };
        let n_vocab = match file.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => match file.tensor_info("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => bail!(
                    Format,
                    "cannot determine vocabulary size (no token_embd.weight)"
                ),
            },
        };

        let mut cfg = Config {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ctx_train,
            rms_eps,
            rope_style: RopeStyle::Normal,
            n_rot,
            rope_freq_base,
            rope_freq_scale,
            rope_freq_base_swa: rope_freq_base,
            activation: Activation::Silu,
            sliding_window: 0,
            swa_period: 0,
            scale_embeddings: false,
            attn_scale: 1.0 / (head_dim_k as f32).sqrt(),
            final_logit_softcap: None,
            attn_logit_softcap: None,
        };
        match arch {
            Architecture::Llama => {}
            Architecture::Qwen2 => cfg.rope_style = RopeStyle::Neox,
            Architecture::Gemma3 => {
                cfg.rope_style = RopeStyle::Neox;
                cfg.activation = Activation::GeluTanh;
                cfg.scale_embeddings = true;
                // llama.cpp: every 6th layer is global, the others use a sliding window
                // with a fixed RoPE base of 10000.
                cfg.sliding_window = file
                    .get_u64(&key("attention.sliding_window"))
                    .map(|v| v as usize)
                    .unwrap_or(0);
                cfg.swa_period = if cfg.sliding_window > 0 { 6 } else { 0 };
                cfg.rope_freq_base_swa = 10_000.0;
                // Gemma 3 27B scales queries by 1/sqrt(n_embd/n_head), the others by head size.
                if n_layer == 62 {
                    cfg.attn_scale = 1.0 / ((n_embd / n_head) as f32).sqrt();
                }
                cfg.final_logit_softcap = opt_f("final_logit_softcapping").filter(|&c| c > 0.0);
                cfg.attn_logit_softcap = opt_f("attn_logit_softcapping").filter(|&c| c > 0.0);
            }
        }
        Ok(cfg)
    }

    /// Whether layer `il` attends through a sliding window.
    pub fn is_swa_layer(&self, il: usize) -> bool {
        self.swa_period > 0 && (il + 1) % self.swa_period != 0
    }

    /// RoPE base of layer `il`.
    pub fn rope_base(&self, il: usize) -> f32 {
        if self.is_swa_layer(il) {
            self.rope_freq_base_swa
        } else {
            self.rope_freq_base
        }
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
