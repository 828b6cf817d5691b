//! Device-resident data: quantized weight matrices (uploaded once, padded), f32 vectors,
//! Q8_1-quantized activations, the f16 KV cache, and the neuron-major down-projection copy
//! used by the sparse FFN.

use cudarc::driver::CudaSlice;

use super::device::CudaBackend;
use super::kernels::type_suffix;
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::{bail, Result};

/// Extra zeroed bytes after every uploaded weight matrix, so that a kernel reading a whole
/// 16-byte word or block past the last row never faults (the kernels here do not rely on it).
pub const WEIGHT_PADDING_BYTES: usize = 1024;

/// A row-major weight matrix in a ggml type on the device: `n_rows` rows of `n_cols` weights,
/// `row_bytes` apart (a GGUF tensor with dims `[n_cols, n_rows]`).
pub struct DeviceMatrix {
    pub(crate) ty: GgmlType,
    pub(crate) n_rows: usize,
    pub(crate) n_cols: usize,
    pub(crate) row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
}

impl DeviceMatrix {
    /// Uploads `bytes` (exactly `n_rows` rows of `ty`) once. `n_cols` must be a multiple of 32
    /// (every kernel works on 32-weight units) and `ty` one of
    /// [`super::SUPPORTED_WEIGHT_TYPES`].
    pub fn upload(
        backend: &CudaBackend,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        if type_suffix(ty).is_none() {
            bail!(
                Unsupported,
                "CUDA backend: weight type {} has no kernels",
                ty.name()
            );
        }
        if n_cols == 0 || n_cols % 32 != 0 {
            bail!(
                InvalidArgument,
                "CUDA matrix: n_cols {n_cols} is not a positive multiple of 32"
            );
        }
        let row_bytes = match ty.row_bytes(n_cols as u64) {
            Some(b) => b as usize,
            None => bail!(
                InvalidArgument,
                "CUDA matrix: {n_cols} columns is not whole {} blocks",
                ty.name()
            ),
        };
        let expected = row_bytes.checked_mul(n_rows);
        if expected != Some(bytes.len()) {
            bail!(
                InvalidArgument,
                "CUDA matrix: {} bytes given, {n_rows} rows of {n_cols} {} need {row_bytes} each",
                bytes.len(),
                ty.name()
            );
        }
        if n_rows > i32::MAX as usize || n_cols > i32::MAX as usize {
            bail!(
                InvalidArgument,
                "CUDA matrix: {n_rows} x {n_cols} exceeds the kernels' 32-bit indices"
            );
        }
        let data = backend.upload_padded(bytes, WEIGHT_PADDING_BYTES)?;
        Ok(DeviceMatrix {
            ty,
            n_rows,
            n_cols,
            row_bytes,
            data,
        })
    }

    /// Uploads the 2-D GGUF tensor `name` (dims `[n_cols, n_rows]`) of `file`.
    pub fn upload_tensor(backend: &CudaBackend, file: &GgufFile, name: &str) -> Result<Self> {
        let (info, data) = file.tensor(name)?;
        if info.dims.len() != 2 {
            bail!(
                Format,
                "tensor {name} has {} dims, a matrix needs 2",
                info.dims.len()
            );
        }
        let (Ok(n_cols), Ok(n_rows)) =
            (usize::try_from(info.dims[0]), usize::try_from(info.dims[1]))
        else {
            bail!(Format, "tensor {name} dims {:?} too large", info.dims);
        };
        Self::upload(backend, info.ty, n_cols, n_rows, data)
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }
    /// Bytes of weights (without padding).
    pub fn size_bytes(&self) -> usize {
        self.row_bytes * self.n_rows
    }
}

/// An f32 vector (or a row-major batch of vectors) on the device.
pub struct DeviceVec {
    pub(crate) data: CudaSlice<f32>,
    pub(crate) len: usize,
}

impl DeviceVec {
    pub fn zeros(backend: &CudaBackend, len: usize) -> Result<Self> {
        Ok(DeviceVec {
            data: backend.alloc_zeros(len)?,
            len,
        })
    }

    pub fn from_host(backend: &CudaBackend, values: &[f32]) -> Result<Self> {
        Ok(DeviceVec {
            data: backend.upload_padded(values, 0)?,
            len: values.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites the vector with `values` (same length).
    pub fn write(&mut self, backend: &CudaBackend, values: &[f32]) -> Result<()> {
        if values.len() != self.len {
            bail!(
                InvalidArgument,
                "DeviceVec::write: {} values into a vector of {}",
                values.len(),
                self.len
            );
        }
        backend.upload_into(values, &mut self.data)
    }

    /// Copies the vector to the host (waits for queued work).
    pub fn read(&self, backend: &CudaBackend, out: &mut [f32]) -> Result<()> {
        backend.download(&self.data, self.len, out)
    }

    /// Copies the first `out.len()` values (at most `len()`) to the host.
    pub fn read_prefix(&self, backend: &CudaBackend, out: &mut [f32]) -> Result<()> {
        if out.len() > self.len {
            bail!(
                InvalidArgument,
                "DeviceVec::read_prefix: {} values from a vector of {}",
                out.len(),
                self.len
            );
        }
        backend.download(&self.data, out.len(), out)
    }

    pub fn to_vec(&self, backend: &CudaBackend) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.len];
        self.read(backend, &mut v)?;
        Ok(v)
    }
}

/// An activation vector in f32 plus its Q8_1 form (structure of arrays: `n` int8 values and
/// one `(d, d * sum q)` f32 pair per 32). Fill `x`, then call
/// [`CudaBackend::quantize_activations`] before the integer matvecs read `q8_1`.
pub struct DeviceActivations {
    pub x: DeviceVec,
    pub(crate) qs: CudaSlice<i8>,
    pub(crate) ds: CudaSlice<f32>,
}

impl DeviceActivations {
    /// `n` must be a multiple of 32.
    pub fn new(backend: &CudaBackend, n: usize) -> Result<Self> {
        if n == 0 || n % 32 != 0 {
            bail!(
                InvalidArgument,
                "activations of length {n}: not a positive multiple of 32"
            );
        }
        Ok(DeviceActivations {
            x: DeviceVec::zeros(backend, n)?,
            qs: backend.alloc_zeros(n)?,
            ds: backend.alloc_zeros(2 * (n / 32))?,
        })
    }

    pub fn len(&self) -> usize {
        self.x.len
    }

    pub fn is_empty(&self) -> bool {
        self.x.len == 0
    }

    /// The quantized form, as host copies: (int8 values, per-block (d, d * sum q) pairs).
    pub fn read_q8_1(&self, backend: &CudaBackend) -> Result<(Vec<i8>, Vec<[f32; 2]>)> {
        let n = self.len();
        let mut qs = vec![0i8; n];
        backend.download(&self.qs, n, &mut qs)?;
        let mut ds = vec![0f32; 2 * (n / 32)];
        backend.download(&self.ds, ds.len(), &mut ds)?;
        Ok((qs, ds.chunks_exact(2).map(|c| [c[0], c[1]]).collect()))
    }
}

/// Geometry of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheShape {
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub max_ctx: usize,
}

/// Keys and values for every layer, f16, laid out `[n_kv_heads][max_ctx][head_dim]` per layer
/// so that one head's keys are contiguous.
pub struct KvCache {
    pub(crate) shape: KvCacheShape,
    /// f16 bits.
    pub(crate) k: Vec<CudaSlice<u16>>,
    pub(crate) v: Vec<CudaSlice<u16>>,
}

impl KvCache {
    pub fn new(backend: &CudaBackend, shape: KvCacheShape) -> Result<Self> {
        let KvCacheShape {
            n_layers,
            n_kv_heads,
            head_dim,
            max_ctx,
        } = shape;
        if n_layers == 0
            || n_kv_heads == 0
            || max_ctx == 0
            || head_dim == 0
            || head_dim % 2 != 0
            || head_dim > 1024
        {
            bail!(
                InvalidArgument,
                "KV cache shape {shape:?}: zero size, or head_dim odd or above 1024"
            );
        }
        let per_layer = n_kv_heads
            .checked_mul(max_ctx)
            .and_then(|x| x.checked_mul(head_dim))
            .filter(|&x| x <= i32::MAX as usize);
        let Some(per_layer) = per_layer else {
            bail!(InvalidArgument, "KV cache shape {shape:?} too large");
        };
        let mut k = Vec::with_capacity(n_layers);
        let mut v = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            k.push(backend.alloc_zeros::<u16>(per_layer)?);
            v.push(backend.alloc_zeros::<u16>(per_layer)?);
        }
        Ok(KvCache { shape, k, v })
    }

    pub fn shape(&self) -> KvCacheShape {
        self.shape
    }

    /// Host copy of one layer's (keys, values) as f16 bits, `[n_kv_heads][max_ctx][head_dim]`.
    pub fn read_layer(&self, backend: &CudaBackend, layer: usize) -> Result<(Vec<u16>, Vec<u16>)> {
        if layer >= self.shape.n_layers {
            bail!(
                InvalidArgument,
                "KV cache layer {layer} of {}",
                self.shape.n_layers
            );
        }
        let n = self.k[layer].len();
        let mut k = vec![0u16; n];
        let mut v = vec![0u16; n];
        backend.download(&self.k[layer], n, &mut k)?;
        backend.download(&self.v[layer], n, &mut v)?;
        Ok((k, v))
    }
}

/// A neuron-major copy of `ffn_down` for the sparse FFN: row `i` holds neuron `i`'s `n_embd`
/// output weights (column `i` of the GGUF tensor), Q8_0 or Q4_0, so an active neuron is one
/// contiguous row. On the device each row is stored split: the quants of its blocks first
/// (ggml's order within a block), then the blocks' f16 scales, rows padded to 16 bytes, so
/// the sparse down kernel reads a lane's columns with one aligned 16-byte load.
pub struct NeuronMajorDown {
    pub(crate) ty: GgmlType,
    pub(crate) n_ff: usize,
    pub(crate) n_embd: usize,
    /// Distance between device rows (the ggml row size rounded up to 16 bytes).
    pub(crate) row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
}

impl NeuronMajorDown {
    /// `q8_0_rows`: `n_ff` rows of `n_embd` Q8_0 weights (`n_embd` a multiple of 32).
    pub fn upload(
        backend: &CudaBackend,
        n_ff: usize,
        n_embd: usize,
        q8_0_rows: &[u8],
    ) -> Result<Self> {
        Self::upload_typed(backend, GgmlType::Q8_0, n_ff, n_embd, q8_0_rows)
    }

    /// `rows`: `n_ff` rows of `n_embd` weights of type `ty` in ggml's block format, Q8_0 or
    /// Q4_0 (half the bytes of Q8_0: what makes skipping down rows pay on the GPU, at a quality
    /// cost to measure).
    pub fn upload_typed(
        backend: &CudaBackend,
        ty: GgmlType,
        n_ff: usize,
        n_embd: usize,
        rows: &[u8],
    ) -> Result<Self> {
        let quant_bytes = match ty {
            GgmlType::Q8_0 => 32,
            GgmlType::Q4_0 => 16,
            _ => bail!(
                Unsupported,
                "neuron-major ffn_down copy of type {}: the sparse kernels read Q8_0 or Q4_0",
                ty.name()
            ),
        };
        let block_bytes = quant_bytes + 2;
        let n_blocks = n_embd / 32;
        let row_len = n_blocks * block_bytes;
        if n_ff == 0 || n_embd == 0 || n_embd % 32 != 0 || rows.len() != n_ff * row_len {
            bail!(
                InvalidArgument,
                "neuron-major ffn_down: {} bytes for {n_ff} rows of {n_embd} {}",
                rows.len(),
                ty.name()
            );
        }
        let stride = row_len.next_multiple_of(16);
        let mut split = vec![0u8; n_ff * stride];
        for (src, dst) in rows
            .chunks_exact(row_len)
            .zip(split.chunks_exact_mut(stride))
        {
            let (quants, scales) = dst.split_at_mut(n_blocks * quant_bytes);
            for (b, block) in src.chunks_exact(block_bytes).enumerate() {
                scales[2 * b..2 * b + 2].copy_from_slice(&block[..2]);
                quants[b * quant_bytes..(b + 1) * quant_bytes].copy_from_slice(&block[2..]);
            }
        }
        let data = backend.upload_padded(&split, WEIGHT_PADDING_BYTES)?;
        Ok(NeuronMajorDown {
            ty,
            n_ff,
            n_embd,
            row_bytes: stride,
            data,
        })
    }

    pub fn n_ff(&self) -> usize {
        self.n_ff
    }
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }
}

/// Scratch of the sparse FFN (one per forward pass, reused by every layer of the same
/// shape): the thresholded activated gate, the hidden vector, and the down kernel's
/// per-slice partial sums and per-tile tickets.
pub struct SparseFfnScratch {
    pub(crate) n_ff: usize,
    pub(crate) n_embd: usize,
    /// `a[n]`: act(gate_n . x) for kept neurons, 0 for skipped ones.
    pub(crate) a: CudaSlice<f32>,
    /// `h[n]`: a[n] * (up_n . x) for neurons down reads, 0 for the others.
    pub(crate) h: CudaSlice<f32>,
    pub(crate) partials: CudaSlice<f32>,
    pub(crate) tickets: CudaSlice<u32>,
}

/// Most neuron slices the sparse down kernel splits a layer into (its partial sums take
/// `SPARSE_DOWN_MAX_SLICES * n_embd` floats).
pub const SPARSE_DOWN_MAX_SLICES: usize = 64;

impl SparseFfnScratch {
    /// For layers of `n_ff` neurons and width `n_embd`.
    pub fn new(backend: &CudaBackend, n_ff: usize, n_embd: usize) -> Result<Self> {
        if n_ff == 0 || n_ff > i32::MAX as usize || n_embd == 0 || n_embd > i32::MAX as usize {
            bail!(
                InvalidArgument,
                "sparse FFN scratch for {n_ff} neurons of width {n_embd}"
            );
        }
        Ok(SparseFfnScratch {
            n_ff,
            n_embd,
            a: backend.alloc_zeros(n_ff)?,
            h: backend.alloc_zeros(n_ff)?,
            partials: backend.alloc_zeros(SPARSE_DOWN_MAX_SLICES * n_embd)?,
            // One ticket per down tile (tiles are at least 256 columns wide).
            tickets: backend.alloc_zeros(n_embd.div_ceil(256))?,
        })
    }

    /// The neurons the last run kept after the gate test, with their activated gate values,
    /// in neuron order. (A kept neuron whose activation is exactly 0 contributes nothing and
    /// is not listed.)
    pub fn read_active(&self, backend: &CudaBackend) -> Result<Vec<(u32, f32)>> {
        let mut a = vec![0f32; self.n_ff];
        backend.download(&self.a, self.n_ff, &mut a)?;
        Ok(nonzero(&a))
    }

    /// The neurons whose down rows the last run read (after the product test), with their
    /// hidden values `h`, in neuron order.
    pub fn read_hidden(&self, backend: &CudaBackend) -> Result<Vec<(u32, f32)>> {
        let mut h = vec![0f32; self.n_ff];
        backend.download(&self.h, self.n_ff, &mut h)?;
        Ok(nonzero(&h))
    }
}

fn nonzero(v: &[f32]) -> Vec<(u32, f32)> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| **x != 0.0)
        .map(|(i, &x)| (i as u32, x))
        .collect()
}

/// Counters slots per layer of [`FfnCounters`] (`2 * GC_COUNT_SLOTS` in sparse_ffn.cu).
pub const COUNT_STRIDE: usize = 64;

/// Per-layer device counters of the sparse FFN: neurons kept past the gate (up rows read) and
/// neurons whose down row was read, summed over the tokens since the last reset. The kernels
/// add to them without any host round trip; they are read on request.
pub struct FfnCounters {
    pub(crate) n_layer: usize,
    pub(crate) data: CudaSlice<u64>,
}

impl FfnCounters {
    pub fn new(backend: &CudaBackend, n_layer: usize) -> Result<Self> {
        Ok(FfnCounters {
            n_layer,
            data: backend.alloc_zeros(n_layer.max(1) * COUNT_STRIDE)?,
        })
    }

    /// Per layer: (neurons kept past the gate, neurons whose down row was read).
    pub fn read(&self, backend: &CudaBackend) -> Result<Vec<(u64, u64)>> {
        let mut v = vec![0u64; self.n_layer * COUNT_STRIDE];
        backend.download(&self.data, v.len(), &mut v)?;
        let half = COUNT_STRIDE / 2;
        Ok(v.chunks_exact(COUNT_STRIDE)
            .map(|c| (c[..half].iter().sum(), c[half..].iter().sum()))
            .collect())
    }

    pub fn reset(&mut self, backend: &CudaBackend) -> Result<()> {
        backend.memset_zero(&mut self.data)
    }
}

/// The per-token scalars of a decode step in device memory: token, position and the two
/// attention ranges (whole context, sliding window). Kernels launched with a step read them
/// from here, so one captured CUDA graph replays every decode step: the host writes these six
/// ints, launches the graph and reads the logits.
pub struct DecodeStep {
    pub(crate) data: CudaSlice<i32>,
    max_ctx: usize,
    n_vocab: usize,
}

impl DecodeStep {
    pub(crate) const TOKEN: usize = 0;
    pub(crate) const POS: usize = 1;
    /// `[0, pos + 1)`.
    pub(crate) const FULL: usize = 2;
    /// `[pos + 1 - window, pos + 1)`, clamped at 0.
    pub(crate) const WINDOW: usize = 4;

    /// For a cache of `max_ctx` positions and a vocabulary of `n_vocab` tokens.
    pub fn new(backend: &CudaBackend, max_ctx: usize, n_vocab: usize) -> Result<Self> {
        if max_ctx > i32::MAX as usize || n_vocab > i32::MAX as usize {
            bail!(InvalidArgument, "decode step: sizes exceed i32");
        }
        Ok(DecodeStep {
            data: backend.alloc_zeros(6)?,
            max_ctx,
            n_vocab,
        })
    }

    /// Queues the upload of the next step's scalars (ordered before later launches on the
    /// backend's stream). `window` 0 means no sliding window.
    pub fn set(
        &mut self,
        backend: &CudaBackend,
        token: u32,
        pos: usize,
        window: usize,
    ) -> Result<()> {
        if token as usize >= self.n_vocab || pos >= self.max_ctx {
            bail!(
                InvalidArgument,
                "decode step: token {token} (vocabulary {}), position {pos} (cache {})",
                self.n_vocab,
                self.max_ctx
            );
        }
        let end = pos as i32 + 1;
        let first = if window > 0 {
            (pos + 1).saturating_sub(window) as i32
        } else {
            0
        };
        backend.upload_into(
            &[token as i32, pos as i32, 0, end, first, end],
            &mut self.data,
        )
    }
}
