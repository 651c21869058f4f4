//! The MiniLM/BERT encoder forward pass in `tch` ops, over weights that are tensors created on
//! the memory-mapped safetensors bytes (CPU) or copied from them straight to the GPU.

use std::sync::Arc;

use featherguard_loader::{Dtype, SafeTensorsFile};
use tch::{Kind, Tensor};

use crate::arch::{self, EncoderShape, EncoderSpec};
use crate::TorchError;

/// Additive attention bias of padding positions, as BERT (and the ONNX export) uses: large enough
/// that softmax gives padding ~0 weight, small enough to stay finite in f16.
const MASK_BIAS: f64 = -10000.0;

struct Layer {
    query: (Tensor, Tensor),
    key: (Tensor, Tensor),
    value: (Tensor, Tensor),
    attn_out: (Tensor, Tensor),
    attn_norm: (Tensor, Tensor),
    intermediate: (Tensor, Tensor),
    output: (Tensor, Tensor),
    out_norm: (Tensor, Tensor),
}

/// The encoder with its weights. On the CPU every weight tensor points into `file`'s mapping.
pub struct Encoder {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: (Tensor, Tensor),
    layers: Vec<Layer>,
    shape: EncoderShape,
    spec: EncoderSpec,
    device: tch::Device,
    kind: Kind,
    /// The mapping the CPU weights are views of. Declared after every tensor: struct fields drop
    /// in declaration order, so no tensor can outlive the bytes it points into.
    _file: Arc<SafeTensorsFile>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("shape", &self.shape)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Checks `file` against the architecture, then builds the weights: on the CPU as f32
    /// tensors over the mapped bytes (nothing read or copied until a forward pass touches a page),
    /// elsewhere as `kind` tensors copied from the mapping to `device`.
    pub fn load(
        file: Arc<SafeTensorsFile>,
        shape: EncoderShape,
        spec: EncoderSpec,
        device: tch::Device,
        kind: Kind,
    ) -> Result<Encoder, TorchError> {
        // A wrong shape that reached a libtorch op would be a C++ exception at best, and a read
        // past the end of the mapping at worst.
        arch::check(file.path().to_owned(), file.header(), shape, spec)?;
        // Re-checked here, not only in `check`: a file truncated since it was mapped must not be
        // handed to libtorch as if its bytes were there.
        file.check_length(None)?;
        let weight = |name: &str| weight(&file, name, device, kind);
        let pair = |prefix: &str| -> Result<(Tensor, Tensor), TorchError> {
            Ok((
                weight(&format!("{prefix}.weight"))?,
                weight(&format!("{prefix}.bias"))?,
            ))
        };
        let mut layers = Vec::with_capacity(shape.layers);
        for l in 0..shape.layers {
            let p = |suffix: &str| format!("encoder.layer.{l}.{suffix}");
            layers.push(Layer {
                query: pair(&p("attention.self.query"))?,
                key: pair(&p("attention.self.key"))?,
                value: pair(&p("attention.self.value"))?,
                attn_out: pair(&p("attention.output.dense"))?,
                attn_norm: pair(&p("attention.output.LayerNorm"))?,
                intermediate: pair(&p("intermediate.dense"))?,
                output: pair(&p("output.dense"))?,
                out_norm: pair(&p("output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            word: weight("embeddings.word_embeddings.weight")?,
            position: weight("embeddings.position_embeddings.weight")?,
            token_type: weight("embeddings.token_type_embeddings.weight")?,
            emb_norm: pair("embeddings.LayerNorm")?,
            layers,
            shape,
            spec,
            device,
            kind,
            _file: file,
        })
    }

    pub fn shape(&self) -> EncoderShape {
        self.shape
    }

    /// Self-attention of `b x heads x s x head_dim` tensors with the additive padding bias; the
    /// scale defaults to 1/sqrt(head_dim) as in BERT.
    ///
    /// The CPU uses libtorch's `scaled_dot_product_attention`. On CUDA its dispatcher picks the
    /// cuDNN kernel for f16/bf16 on recent GPUs (H100, libtorch 2.11), which builds and compiles
    /// an execution plan for every new (rows, tokens) shape: ~45 ms the first time each shape is
    /// seen, so the first texts of each length were 20-30x slower than the steady state. The
    /// memory-efficient kernel (what the dispatcher picks for f32) has no per-shape setup, so it
    /// is called directly; if libtorch refuses it, the dispatcher's choice is used.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        cuda_bias: &Option<Tensor>,
    ) -> Result<Tensor, TorchError> {
        if let Some(full) = cuda_bias {
            if let Ok((out, ..)) = Tensor::f_internal_scaled_dot_product_efficient_attention(
                q,
                k,
                v,
                Some(full),
                false,
                0.0,
                false,
                None,
            ) {
                return Ok(out);
            }
        }
        Ok(Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            Some(bias),
            0.0,
            false,
            None,
            false,
        )?)
    }

    /// Masked mean of the last hidden states of `rows x seq` token ids (row-major, padded with
    /// mask 0), as `rows * hidden` f32 values; not normalized.
    pub fn forward(
        &self,
        ids: &[i64],
        mask: &[i64],
        rows: usize,
        seq: usize,
    ) -> Result<Vec<f32>, TorchError> {
        // Every bound libtorch would otherwise check by throwing (or not check at all) is checked
        // here first.
        if ids.len() != rows * seq || mask.len() != ids.len() {
            return Err(TorchError::Input(format!(
                "{} ids and {} mask values for {rows} x {seq}",
                ids.len(),
                mask.len()
            )));
        }
        if seq > self.shape.max_positions {
            return Err(TorchError::Input(format!(
                "{seq} tokens per row exceed the model's {} positions",
                self.shape.max_positions
            )));
        }
        if let Some(bad) = ids
            .iter()
            .find(|&&id| id < 0 || id as u64 >= self.shape.vocab as u64)
        {
            return Err(TorchError::Input(format!(
                "token id {bad} outside the vocabulary of {}",
                self.shape.vocab
            )));
        }
        let h = self.shape.hidden;
        if rows == 0 || seq == 0 {
            return Ok(vec![0.0; rows * h]);
        }
        let _no_grad = tch::no_grad_guard();
        let (b, s) = (rows as i64, seq as i64);
        let heads = self.spec.heads as i64;
        let head_dim = h as i64 / heads;
        let eps = self.spec.layer_norm_eps;
        let norm_shape = [h as i64];
        let ids = Tensor::f_from_slice(ids)?
            .f_view([b, s])?
            .f_to_device(self.device)?;
        let mask = Tensor::f_from_slice(mask)?
            .f_view([b, s])?
            .f_to_device(self.device)?;

        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut x = Tensor::f_embedding(&self.word, &ids, -1, false, false)?
            .f_add(&self.position.f_narrow(0, 0, s)?)?
            .f_add(&self.token_type.f_narrow(0, 0, 1)?)?
            .f_layer_norm(
                norm_shape,
                Some(&self.emb_norm.0),
                Some(&self.emb_norm.1),
                eps,
                true,
            )?;
        // 0 for tokens, MASK_BIAS for padding, broadcast over heads and query positions.
        let bias = mask
            .f_to_kind(self.kind)?
            .f_sub_scalar(1.0)?
            .f_mul_scalar(-MASK_BIAS)?
            .f_view([b, 1, 1, s])?;
        // On CUDA the memory-efficient kernel is called directly (see `attention`), with the bias
        // laid out as libtorch's dispatcher would: its last dimension padded to a multiple of 16
        // elements in memory, then narrowed back and broadcast over heads and query positions.
        let cuda_bias = if self.device == tch::Device::Cpu {
            None
        } else {
            let mut aligned =
                Tensor::f_zeros([b, 1, 1, (s + 15) / 16 * 16], (self.kind, self.device))?
                    .f_narrow(3, 0, s)?;
            aligned.f_copy_(&bias)?;
            Some(aligned.f_expand([b, heads, s, s], false)?)
        };
        let split = |t: Tensor| -> Result<Tensor, TorchError> {
            Ok(t.f_view([b, s, heads, head_dim])?.f_transpose(1, 2)?)
        };
        for layer in &self.layers {
            let q = split(x.f_linear(&layer.query.0, Some(&layer.query.1))?)?;
            let k = split(x.f_linear(&layer.key.0, Some(&layer.key.1))?)?;
            let v = split(x.f_linear(&layer.value.0, Some(&layer.value.1))?)?;
            let ctx = self
                .attention(&q, &k, &v, &bias, &cuda_bias)?
                .f_transpose(1, 2)?
                .f_reshape([b, s, h as i64])?;
            let attn = ctx.f_linear(&layer.attn_out.0, Some(&layer.attn_out.1))?;
            let x1 = attn.f_add(&x)?.f_layer_norm(
                norm_shape,
                Some(&layer.attn_norm.0),
                Some(&layer.attn_norm.1),
                eps,
                true,
            )?;
            // BERT's GELU is the erf form ("none"), not the tanh approximation.
            let y = x1
                .f_linear(&layer.intermediate.0, Some(&layer.intermediate.1))?
                .f_gelu("none")?;
            x = y
                .f_linear(&layer.output.0, Some(&layer.output.1))?
                .f_add(&x1)?
                .f_layer_norm(
                    norm_shape,
                    Some(&layer.out_norm.0),
                    Some(&layer.out_norm.1),
                    eps,
                    true,
                )?;
        }
        // Pool in f32 whatever the compute kind: summing up to a window of f16 values loses digits.
        let m = mask.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?;
        let summed = x.f_to_kind(Kind::Float)?.f_mul(&m)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        )?;
        let counts = m
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
            .f_clamp_min(1e-9)?;
        let pooled = summed
            .f_div(&counts)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?;
        let mut out = vec![0f32; rows * h];
        pooled.f_copy_data(&mut out, rows * h)?;
        Ok(out)
    }
}

/// One weight: a CPU f32 tensor over the mapped bytes, or a copy on `device` as `kind`.
fn weight(
    file: &SafeTensorsFile,
    name: &str,
    device: tch::Device,
    kind: Kind,
) -> Result<Tensor, TorchError> {
    let cpu = tensor_over(file, name)?;
    if device == tch::Device::Cpu && cpu.f_kind()? == kind {
        return Ok(cpu);
    }
    // One copy, read from the mapping and written on the device in the target kind.
    Ok(cpu.f_to_device_(device, kind, false, true)?)
}

/// The libtorch kind of a safetensors dtype, where libtorch has one.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::Bool => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I32 => Kind::Int,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::F8E5M2 => Kind::Float8e5m2,
        Dtype::F8E4M3 => Kind::Float8e4m3fn,
        Dtype::U16 | Dtype::U32 | Dtype::U64 => return None,
    })
}

/// A CPU tensor over the mapped bytes of tensor `name`: nothing is read or copied.
fn tensor_over(file: &SafeTensorsFile, name: &str) -> Result<Tensor, TorchError> {
    let view = file.tensor(name)?;
    let dtype = view.dtype();
    let kind = kind_of(dtype).ok_or_else(|| {
        TorchError::Input(format!("{name}: dtype {dtype} has no libtorch equivalent"))
    })?;
    let data = view.data();
    let numel: usize = view.shape().iter().product();
    if data.len() != numel * dtype.size() {
        return Err(TorchError::Input(format!(
            "{name}: {} bytes for shape {:?} of {dtype}",
            data.len(),
            view.shape()
        )));
    }
    if (data.as_ptr() as usize) % dtype.size() != 0 {
        return Err(TorchError::Input(format!(
            "{name}: data is not aligned to its {}-byte elements in the file",
            dtype.size()
        )));
    }
    let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    // SAFETY: `data` holds exactly `dims.product()` elements of `kind`, aligned, inside the
    // read-only mapping owned by `file`; callers keep `file` alive (Encoder::_file, Mapped::_file,
    // each declared after the tensors so they drop first) for as long as this tensor and any view
    // of it exist. Nothing writes into these tensors (every op used is out of place), so the
    // read-only pages are never written.
    Ok(unsafe { Tensor::f_from_blob(data.as_ptr(), &dims, &[], kind, tch::Device::Cpu)? })
}

/// Every tensor of a checkpoint as a CPU tensor over the mapping, for any architecture.
pub struct Mapped {
    tensors: Vec<(String, Tensor)>,
    /// Declared after the tensors: dropped after them.
    _file: Arc<SafeTensorsFile>,
}

impl Mapped {
    /// Views every tensor of `file` in place (O(header); no tensor data is read).
    pub fn new(file: Arc<SafeTensorsFile>) -> Result<Mapped, TorchError> {
        file.check_length(None)?;
        let tensors = file
            .header()
            .tensors()
            .iter()
            .map(|t| Ok((t.name.clone(), tensor_over(&file, &t.name)?)))
            .collect::<Result<Vec<_>, TorchError>>()?;
        Ok(Mapped {
            tensors,
            _file: file,
        })
    }

    /// The tensors, in file order.
    ///
    /// # Safety
    /// Each tensor points into the mapping `self` owns, and libtorch cannot be told so: a
    /// `shallow_clone`, a view (`narrow`, `view`, ...) or any other tensor sharing the storage must
    /// be dropped before `self` is, and none may be written to (the pages are read-only).
    pub unsafe fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }
}
