//! Zero-copy weight views into the mapped GGUF file, validated up front.

use super::config::{Architecture, Config};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::{bail, Result};

/// A 2-D (or 1-D) tensor inside the mapped file: `n_rows` rows of `n_cols` elements.
/// The bytes live in the `GgufFile` the model keeps alive; resolve them with
/// [`super::Model::bytes`].
#[derive(Debug, Clone, Copy)]
pub struct Weight {
    pub ty: GgmlType,
    pub n_cols: usize,
    pub n_rows: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl Weight {
    pub fn row_bytes(&self) -> usize {
        self.len / self.n_rows.max(1)
    }
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Weight,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub bq: Option<Weight>,
    pub bk: Option<Weight>,
    pub bv: Option<Weight>,
    pub q_norm: Option<Weight>,
    pub k_norm: Option<Weight>,
    pub post_attn_norm: Option<Weight>,
    pub ffn_norm: Weight,
    /// Neuron-major: one row of `n_embd` per FFN neuron.
    pub ffn_gate: Weight,
    /// Neuron-major: one row of `n_embd` per FFN neuron.
    pub ffn_up: Weight,
    /// Output-major: one row of `n_ff` per embedding dimension.
    pub ffn_down: Weight,
    pub post_ffn_norm: Option<Weight>,
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: Weight,
    pub output_norm: Weight,
    /// `output.weight`, or `token_embd` when the embeddings are tied.
    pub output: Weight,
    pub tied_embeddings: bool,
    pub layers: Vec<LayerWeights>,
}

/// Types the CPU kernels run as matrix weights.
fn is_matrix_type(ty: GgmlType) -> bool {
    ty.is_supported_for_compute()
}

struct Loader<'a> {
    file: &'a GgufFile,
    base: usize,
}

impl Loader<'_> {
    fn get(&self, name: &str, dims: &[usize], matrix: bool) -> Result<Weight> {
        match self.get_opt(name, dims, matrix)? {
            Some(w) => Ok(w),
            None => bail!(Format, "missing tensor '{name}'"),
        }
    }

    fn get_opt(&self, name: &str, dims: &[usize], matrix: bool) -> Result<Option<Weight>> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        let actual: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
        // Trailing 1-dims are equivalent.
        let trimmed: Vec<usize> = {
            let mut v = actual.clone();
            while v.len() > dims.len() && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        if trimmed != dims {
            bail!(
                Format,
                "tensor '{name}' has shape {actual:?}, expected {dims:?}"
            );
        }
        if matrix {
            if !is_matrix_type(info.ty) {
                bail!(
                    Unsupported,
                    "tensor '{name}' has type {} which the CPU kernels do not support",
                    info.ty.name()
                );
            }
        } else if info.ty != GgmlType::F32 {
            bail!(
                Unsupported,
                "tensor '{name}' has type {}, expected F32",
                info.ty.name()
            );
        }
        let data = self.file.tensor_data(info);
        if !matrix && data.as_ptr() as usize % std::mem::align_of::<f32>() != 0 {
            bail!(Format, "tensor '{name}' data is not 4-byte aligned");
        }
        let offset = data.as_ptr() as usize - self.base;
        let n_cols = dims[0];
        let n_rows = dims.get(1).copied().unwrap_or(1);
        if info.ty.block_size() == 0 || n_cols % info.ty.block_size() != 0 {
            bail!(
                Format,
                "tensor '{name}' rows of {n_cols} are not a multiple of the {} block size",
                info.ty.name()
            );
        }
        Ok(Some(Weight {
            ty: info.ty,
            n_cols,
            n_rows,
            offset,
            len: data.len(),
        }))
    }
}

impl Weights {
    pub fn load(file: &GgufFile, cfg: &Config) -> Result<Weights> {
        let l = Loader {
            file,
            base: file.bytes().as_ptr() as usize,
        };
        let e = cfg.n_embd;
        let token_embd = l.get("token_embd.weight", &[e, cfg.n_vocab], true)?;
        let output_norm = l.get("output_norm.weight", &[e], false)?;
        let (output, tied) = match l.get_opt("output.weight", &[e, cfg.n_vocab], true)? {
            Some(w) => (w, false),
            None => (token_embd, true),
        };
        let gemma = cfg.arch == Architecture::Gemma3;
        let qwen = cfg.arch == Architecture::Qwen2;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            let bias = |s: &str, d: usize| -> Result<Option<Weight>> {
                if qwen {
                    l.get(&b(s), &[d], false).map(Some)
                } else {
                    l.get_opt(&b(s), &[d], false)
                }
            };
            let norm_opt = |s: &str, d: usize| -> Result<Option<Weight>> {
                if gemma {
                    l.get(&n(s), &[d], false).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.get(&n("attn_norm"), &[e], false)?,
                wq: l.get(&n("attn_q"), &[e, cfg.q_dim()], true)?,
                wk: l.get(&n("attn_k"), &[e, cfg.k_dim()], true)?,
                wv: l.get(&n("attn_v"), &[e, cfg.v_dim()], true)?,
                wo: l.get(&n("attn_output"), &[cfg.n_head * cfg.head_dim_v, e], true)?,
                bq: bias("attn_q", cfg.q_dim())?,
                bk: bias("attn_k", cfg.k_dim())?,
                bv: bias("attn_v", cfg.v_dim())?,
                q_norm: norm_opt("attn_q_norm", cfg.head_dim_k)?,
                k_norm: norm_opt("attn_k_norm", cfg.head_dim_k)?,
                post_attn_norm: norm_opt("post_attention_norm", e)?,
                ffn_norm: l.get(&n("ffn_norm"), &[e], false)?,
                ffn_gate: l.get(&n("ffn_gate"), &[e, cfg.n_ff], true)?,
                ffn_up: l.get(&n("ffn_up"), &[e, cfg.n_ff], true)?,
                ffn_down: l.get(&n("ffn_down"), &[cfg.n_ff, e], true)?,
                post_ffn_norm: norm_opt("post_ffw_norm", e)?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            tied_embeddings: tied,
            layers,
        })
    }
}
