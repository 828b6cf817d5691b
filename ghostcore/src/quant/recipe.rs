//! File-level quantization recipes: which type each tensor of a model gets.
//!
//! [`plan`] mirrors llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for the file
//! types listed in [`Ftype`], without an importance matrix or per-tensor regex overrides
//! ([`Recipe`] adds llama-quantize's `--pure`, `--output-tensor-type` and
//! `--token-embedding-type`):
//! - only tensors with ≥ 2 dimensions whose name ends in `weight` are quantized, minus
//!   norms, expert gates, position/token-type embeddings and a few small special tensors;
//! - the output matrix (and the token embedding when it doubles as the output, i.e. there
//!   is no `output.weight`) gets Q6_K, or Q8_0 when its rows are not a multiple of the
//!   default type's block;
//! - per-category bumps: `attn_v` and `ffn_down` get Q6_K in the layers `use_more_bits`
//!   picks for Q4_K_M/Q5_K_M, and so on;
//! - a row length the chosen type cannot hold falls back (Q4_K→Q5_0, Q5_K→Q5_1,
//!   Q6_K→Q8_0, Q2_K/Q3_K→Q4_0; F16 if even that does not fit, as for 32-weight types).
//!
//! Tensors come out in llama.cpp's write order: by layer number (non-layer tensors
//! first), then by name.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::{bail, Error, Result};

/// A target file type (llama.cpp's `llama_ftype`), i.e. a quantization mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl Ftype {
    pub const ALL: [Ftype; 17] = [
        Ftype::F32,
        Ftype::F16,
        Ftype::BF16,
        Ftype::Q4_0,
        Ftype::Q4_1,
        Ftype::Q5_0,
        Ftype::Q5_1,
        Ftype::Q8_0,
        Ftype::Q2_K,
        Ftype::Q3_K_S,
        Ftype::Q3_K_M,
        Ftype::Q3_K_L,
        Ftype::Q4_K_S,
        Ftype::Q4_K_M,
        Ftype::Q5_K_S,
        Ftype::Q5_K_M,
        Ftype::Q6_K,
    ];

    /// The `general.file_type` value llama.cpp writes (`LLAMA_FTYPE_*`).
    pub fn file_type_id(self) -> u32 {
        match self {
            Ftype::F32 => 0,
            Ftype::F16 => 1,
            Ftype::Q4_0 => 2,
            Ftype::Q4_1 => 3,
            Ftype::Q8_0 => 7,
            Ftype::Q5_0 => 8,
            Ftype::Q5_1 => 9,
            Ftype::Q2_K => 10,
            Ftype::Q3_K_S => 11,
            Ftype::Q3_K_M => 12,
            Ftype::Q3_K_L => 13,
            Ftype::Q4_K_S => 14,
            Ftype::Q4_K_M => 15,
            Ftype::Q5_K_S => 16,
            Ftype::Q5_K_M => 17,
            Ftype::Q6_K => 18,
            Ftype::BF16 => 32,
        }
    }

    /// Lower-case name as `llama-quantize` accepts it ("q4_k_m").
    pub fn name(self) -> &'static str {
        match self {
            Ftype::F32 => "f32",
            Ftype::F16 => "f16",
            Ftype::BF16 => "bf16",
            Ftype::Q4_0 => "q4_0",
            Ftype::Q4_1 => "q4_1",
            Ftype::Q5_0 => "q5_0",
            Ftype::Q5_1 => "q5_1",
            Ftype::Q8_0 => "q8_0",
            Ftype::Q2_K => "q2_k",
            Ftype::Q3_K_S => "q3_k_s",
            Ftype::Q3_K_M => "q3_k_m",
            Ftype::Q3_K_L => "q3_k_l",
            Ftype::Q4_K_S => "q4_k_s",
            Ftype::Q4_K_M => "q4_k_m",
            Ftype::Q5_K_S => "q5_k_s",
            Ftype::Q5_K_M => "q5_k_m",
            Ftype::Q6_K => "q6_k",
        }
    }

    /// The type most tensors get (llama.cpp's `llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            Ftype::F32 => GgmlType::F32,
            Ftype::F16 => GgmlType::F16,
            Ftype::BF16 => GgmlType::BF16,
            Ftype::Q4_0 => GgmlType::Q4_0,
            Ftype::Q4_1 => GgmlType::Q4_1,
            Ftype::Q5_0 => GgmlType::Q5_0,
            Ftype::Q5_1 => GgmlType::Q5_1,
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q2_K => GgmlType::Q2_K,
            Ftype::Q3_K_S | Ftype::Q3_K_M | Ftype::Q3_K_L => GgmlType::Q3_K,
            Ftype::Q4_K_S | Ftype::Q4_K_M => GgmlType::Q4_K,
            Ftype::Q5_K_S | Ftype::Q5_K_M => GgmlType::Q5_K,
            Ftype::Q6_K => GgmlType::Q6_K,
        }
    }
}

impl fmt::Display for Ftype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Ftype {
    type Err = Error;

    /// Case-insensitive ("Q4_K_M", "q4_k_m"); "q4_k" means q4_k_m and "q5_k" q5_k_m, as in
    /// llama-quantize, and "q3_k" means q3_k_m.
    fn from_str(s: &str) -> Result<Ftype> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "q3_k" => "q3_k_m",
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        Ftype::ALL
            .iter()
            .copied()
            .find(|f| f.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = Ftype::ALL.iter().map(|f| f.name()).collect();
                Error::InvalidArgument(format!(
                    "unknown quantization type {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// A file type plus llama-quantize's options that change type choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub ftype: Ftype,
    /// `--pure`: every quantizable tensor gets the default type (still with fallbacks).
    pub pure: bool,
    /// `--output-tensor-type`: type of `output.weight` (and of a tied token embedding).
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`: type of `token_embd.weight`.
    pub token_embedding_type: Option<GgmlType>,
}

impl From<Ftype> for Recipe {
    fn from(ftype: Ftype) -> Recipe {
        Recipe {
            ftype,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
        }
    }
}

/// The model facts the recipe looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelShape {
    /// `general.architecture`.
    pub arch: String,
    /// `<arch>.block_count`.
    pub n_layer: u32,
    /// `<arch>.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// `<arch>.attention.head_count` (first layer's if per-layer).
    pub n_head: u32,
    /// `<arch>.attention.head_count_kv` (defaults to `n_head`).
    pub n_head_kv: u32,
}

impl ModelShape {
    /// Read the facts from a file's metadata.
    pub fn from_file(file: &GgufFile) -> Result<ModelShape> {
        let Some(arch) = file.architecture() else {
            bail!(Format, "general.architecture is missing");
        };
        let arch = arch.to_string();
        let first_u32 = |key: &str| -> Option<u32> {
            if let Some(v) = file.get_u64(key) {
                return u32::try_from(v).ok();
            }
            let a = file.get_array(key)?.to_i64_vec()?;
            a.first().and_then(|&v| u32::try_from(v).ok())
        };
        let Some(n_layer) = first_u32(&format!("{arch}.block_count")) else {
            bail!(Format, "{arch}.block_count is missing");
        };
        let n_expert = first_u32(&format!("{arch}.expert_count")).unwrap_or(0);
        let n_head = first_u32(&format!("{arch}.attention.head_count")).unwrap_or(0);
        let n_head_kv = first_u32(&format!("{arch}.attention.head_count_kv")).unwrap_or(n_head);
        Ok(ModelShape {
            arch,
            n_layer,
            n_expert,
            n_head,
            n_head_kv,
        })
    }

    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }

    /// llama.cpp's LLM_TYPE_70B as its quantizer infers it from metadata.
    fn is_llama_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// A tensor as the recipe sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    /// ggml order, `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// The recipe's decision for one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorChoice {
    /// Index of the tensor in the input list.
    pub index: usize,
    pub name: String,
    pub dims: Vec<u64>,
    /// Type in the input.
    pub source: GgmlType,
    /// Type in the output (equal to `source` means "copy the bytes").
    pub target: GgmlType,
    /// The preferred type did not fit the row length and a fallback was used.
    pub fallback: bool,
}

/// Broad tensor roles the rules distinguish (llama.cpp's `tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Category::TokenEmbd;
        }
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(pat, _)| name.contains(pat))
            .map(|&(_, c)| c)
            .unwrap_or(Category::Other)
    }

    fn is_attn_v_like(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Whether llama.cpp would quantize this tensor at all (`tensor_allows_quantization`).
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: [&str; 32] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
    ];
    const EXACT_NEVER: [&str; 2] = ["position_embd.weight", "token_types.weight"];
    !NEVER.iter().any(|p| name.contains(p))
        && !name.contains(".patch_merger")
        && !name.contains("a.rvq.codebook")
        && !name.contains("mm.a.code_embd")
        && !EXACT_NEVER.contains(&name)
}

/// The layer number llama.cpp sorts by: `N` in a `blk.N.` prefix (as `sscanf("blk.%d.")`
/// reads it), −1 for tensors outside the layers.
pub fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let rest = rest.trim_start();
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return -1;
    }
    digits[..end].parse::<i64>().map(|v| sign * v).unwrap_or(-1)
}

/// llama.cpp's tensor write order (`weight_name_comparer`): layer, then name.
pub fn output_order(a: &str, b: &str) -> Ordering {
    layer_of(a).cmp(&layer_of(b)).then_with(|| a.cmp(b))
}

/// llama.cpp's `use_more_bits`: the layers its `_M` recipes give a larger type.
pub fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// Counters that advance as tensors are visited in write order.
struct State<'a> {
    shape: &'a ModelShape,
    ftype: Ftype,
    output_tensor_type: Option<GgmlType>,
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_layer: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    tied_embeddings: bool,
}

impl State<'_> {
    /// `(i_layer, n_layer)` for per-layer rules; MoE models read the layer from the name.
    fn layer_info(&self, counter: i64, name: &str) -> Result<(i64, i64)> {
        if self.shape.n_expert > 1 {
            let l = layer_of(name);
            if l < 0 || l >= self.n_layer {
                bail!(Format, "cannot tell the layer of tensor {name}");
            }
            return Ok((l, self.n_layer));
        }
        Ok((counter, self.n_layer))
    }

    /// llama.cpp's `llama_tensor_get_type_impl` for the file types we support.
    fn preferred_type(&mut self, t: &TensorDesc, cat: Category) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let shape = self.shape;
        let falcon = shape.is_falcon();
        let mut ty = ftype.default_type();
        if cat == Category::Output || (self.tied_embeddings && cat == Category::TokenEmbd) {
            let nx = t.dims[0];
            if let Some(forced) = self.output_tensor_type {
                ty = forced;
            } else if falcon || nx % ty.block_size() as u64 != 0 {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // No rule for the file types supported here.
        } else if cat.is_attn_v_like() {
            let i = self.i_attention_wv;
            match ftype {
                F::Q2_K => ty = if shape.n_gqa() >= 4 { T::Q4_K } else { T::Q3_K },
                F::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                F::Q3_K_L => ty = T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, self.n_attention_wv) => ty = T::Q6_K,
                F::Q4_K_S if i < 4 => ty = T::Q5_K,
                _ => {}
            }
            if shape.is_llama_70b() && (ty == T::Q3_K || ty == T::Q4_K) {
                ty = T::Q5_K;
            }
            if shape.n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if shape.n_expert == 8 {
                ty = T::Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only IQ mixtures have rules here.
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = self.layer_info(self.i_ffn_down, &t.name)?;
            match ftype {
                F::Q2_K => ty = T::Q3_K,
                F::Q3_K_M => {
                    ty = if i_layer < n_layer / 16 {
                        T::Q5_K
                    } else if !falcon || use_more_bits(i_layer, n_layer) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_L => ty = if falcon { T::Q4_K } else { T::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        ty = if i_layer < n_layer / 16 {
                            T::Q6_K
                        } else if use_more_bits(i_layer, n_layer) {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if use_more_bits(i_layer, n_layer) {
                        ty = T::Q6_K;
                    }
                }
                F::Q5_K_M if use_more_bits(i_layer, n_layer) => ty = T::Q6_K,
                F::Q4_K_S if !falcon && i_layer < n_layer / 8 => ty = T::Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !falcon {
                if shape.n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => ty = T::Q3_K,
                        F::Q3_K_M => ty = T::Q4_K,
                        F::Q3_K_L => ty = T::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                ty = T::Q4_K;
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, &t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, &t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(ty)
    }
}

/// Replace a type whose block does not divide the row length (`tensor_type_fallback`).
/// Returns the type and whether a fallback happened.
fn fallback(row_len: u64, ty: GgmlType) -> Result<(GgmlType, bool)> {
    use GgmlType as T;
    if row_len % ty.block_size() as u64 == 0 {
        return Ok((ty, false));
    }
    let mut alt = match ty {
        T::Q2_K | T::Q3_K => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        // A 32-block type has no smaller block to demote to: F16 below.
        other if other.block_size() <= 32 => other,
        other => bail!(
            Unsupported,
            "rows of {row_len} values do not fit {other} and no fallback type is defined"
        ),
    };
    if row_len % alt.block_size() as u64 != 0 {
        alt = T::F16;
    }
    Ok((alt, true))
}

/// Choose a type for every tensor, in llama.cpp's write order.
pub fn plan(
    shape: &ModelShape,
    tensors: &[TensorDesc],
    recipe: impl Into<Recipe>,
) -> Result<Vec<TensorChoice>> {
    let recipe = recipe.into();
    let ftype = recipe.ftype;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| output_order(&tensors[a].name, &tensors[b].name));
    let categories: Vec<Category> = tensors.iter().map(|t| Category::of(&t.name)).collect();
    let mut state = State {
        shape,
        ftype,
        output_tensor_type: recipe.output_tensor_type,
        n_attention_wv: categories.iter().filter(|c| c.is_attn_v_like()).count() as i64,
        i_attention_wv: 0,
        n_layer: shape.n_layer as i64,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        tied_embeddings: !categories.contains(&Category::Output),
    };
    let quantized_default = ftype.default_type().block_size() > 1;
    let mut out = Vec::with_capacity(tensors.len());
    for i in order {
        let t = &tensors[i];
        if t.dims.is_empty() {
            bail!(Format, "tensor {} has no dimensions", t.name);
        }
        let mut choice = TensorChoice {
            index: i,
            name: t.name.clone(),
            dims: t.dims.clone(),
            source: t.ty,
            target: t.ty,
            fallback: false,
        };
        let cat = categories[i];
        if allows_quantization(&t.name, t.dims.len()) {
            // Explicit overrides win outright (llama.cpp applies no fallback to them).
            let forced = match cat {
                Category::TokenEmbd => recipe.token_embedding_type,
                Category::Output => recipe.output_tensor_type,
                _ => None,
            };
            if let Some(ty) = forced {
                choice.target = ty;
            } else {
                choice.target = ftype.default_type();
                if quantized_default {
                    let preferred = if recipe.pure {
                        choice.target
                    } else {
                        state.preferred_type(t, cat)?
                    };
                    let (ty, fell_back) = fallback(t.dims[0], preferred)?;
                    choice.target = ty;
                    choice.fallback = fell_back;
                }
            }
        }
        out.push(choice);
    }
    Ok(out)
}

/// [`plan`] for a GGUF file.
pub fn plan_file(file: &GgufFile, recipe: impl Into<Recipe>) -> Result<Vec<TensorChoice>> {
    let shape = ModelShape::from_file(file)?;
    let tensors: Vec<TensorDesc> = file
        .tensors()
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    plan(&shape, &tensors, recipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftype_names_round_trip() {
        for f in Ftype::ALL {
            assert_eq!(f.name().parse::<Ftype>().unwrap(), f);
            assert_eq!(f.name().to_uppercase().parse::<Ftype>().unwrap(), f);
        }
        assert_eq!("q4_k".parse::<Ftype>().unwrap(), Ftype::Q4_K_M);
        assert!(matches!(
            "q4_k_x".parse::<Ftype>(),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn layer_parsing_matches_sscanf() {
        assert_eq!(layer_of("blk.0.attn_q.weight"), 0);
        assert_eq!(layer_of("blk.17.ffn_down.weight"), 17);
        assert_eq!(layer_of("output.weight"), -1);
        assert_eq!(layer_of("blk.x.weight"), -1);
        let mut names = vec![
            "blk.10.a.weight",
            "token_embd.weight",
            "blk.9.b.weight",
            "blk.9.a.weight",
            "output_norm.weight",
        ];
        names.sort_by(|a, b| output_order(a, b));
        assert_eq!(
            names,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.9.a.weight",
                "blk.9.b.weight",
                "blk.10.a.weight"
            ]
        );
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_pattern() {
        // 30 layers: first 3, last 4, and every third from layer 5.
        let picked: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn fallback_chain() {
        assert_eq!(
            fallback(576, GgmlType::Q4_K).unwrap(),
            (GgmlType::Q5_0, true)
        );
        assert_eq!(
            fallback(576, GgmlType::Q5_K).unwrap(),
            (GgmlType::Q5_1, true)
        );
        assert_eq!(
            fallback(576, GgmlType::Q6_K).unwrap(),
            (GgmlType::Q8_0, true)
        );
        assert_eq!(
            fallback(512, GgmlType::Q6_K).unwrap(),
            (GgmlType::Q6_K, false)
        );
        assert_eq!(
            fallback(100, GgmlType::Q4_K).unwrap(),
            (GgmlType::F16, true)
        );
        assert_eq!(
            fallback(100, GgmlType::Q8_0).unwrap(),
            (GgmlType::F16, true)
        );
        assert!(matches!(
            fallback(100, GgmlType::IQ2_XXS),
            Err(Error::Unsupported(_))
        ));
    }
}
