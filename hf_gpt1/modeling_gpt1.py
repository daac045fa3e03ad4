"""GPT-1: the decoder of "Improving Language Understanding by Generative Pre-Training".

The network in one file, nanoGPT-style: embeddings -> 12 post-LayerNorm blocks -> heads.

    h   = tokens_embed(x) + positions_embed(pos)          learned absolute positions
    for each block:
        h = LN(h + attn(h))                                post-LN (GPT-2 later moved LN in front)
        h = LN(h + mlp(h))                                 mlp = W2 · gelu_tanh(W1 · h)
    logits = h · tokens_embedᵀ                             LM head tied to the token table, no final LN

Fine-tuning heads (paper §3.2) read the final state at the extract token, h_l^m, feed it to a linear
layer and optimise L3 = L2 + λ·L1, where L1 is the language-modelling loss on the same inputs.

HF plumbing (attention interface, masks, KV cache, Auto registration) follows
`transformers/models/gpt2/modeling_gpt2.py` (v5) and stays out of the blocks' way. This file imports
only torch/transformers and `.configuration_gpt1` so it ships as remote code next to checkpoints; where the
hf-gpt1 package is installed it also uses the package's compiled bf16 CPU kernels (`_cpu_kernels`, an optional
import: without it, torch's operators).

Layout note: projections are `nn.Linear` ([out, in] weights) rather than the `Conv1D` ([in, out]) of
transformers' `openai-gpt`, so PEFT/LoRA and quantisers see ordinary linear layers. Checkpoints in the
`openai-gpt` layout are converted on the fly by `GPT1PreTrainedModel.from_pretrained`.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from transformers import PretrainedConfig
from transformers.activations import ACT2FN, GELUTanh
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, create_causal_mask, sdpa_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_gpt1 import GPT1Config

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ/√d + mask) · v, written out; the reference for every other implementation. Without a mask it is
    causal, the queries being the last positions of the keys (what sdpa's `is_causal` does when the mask is skipped)."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if attention_mask is None and q_len > 1:
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = may attend
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1).to(value.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2)  # (batch, seq, heads, head_dim)
    return attn_output, attn_weights


# Fast paths (CPU). PyTorch's SDPA runs its fused kernel only without dropout; with the paper's attention dropout it
# falls back to a math path that materialises every T×T intermediate and draws the mask with `bernoulli_` (one
# 53-bit double per element). `gpt1_fused`, the default implementation, is exactly `sdpa` except in that case and
# in bf16 CPU training without attention dropout, where the same blockwise kernel beats SDPA's flash kernel.

GPT1_ATTENTION = "gpt1_fused"
_INT16_MIN = -(2**15)
_BLOCK_ELEMENTS = 1 << 21  # scores per query block (bh × rows × keys): 8 MiB in fp32, recycled by the allocator


def random_keep_mask(shape, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 CPU mask of 1 = kept / 0 = dropped; elements independent with P(drop) = round(p·2¹⁶)/2¹⁶ (within 2⁻¹⁷ of p).

    Four 16-bit fields per full-range 64-bit draw of the generator: one draw serves four elements, where `bernoulli_`
    spends a 53-bit double on each. A field v is uniform on [-2¹⁵, 2¹⁵) and dropped when v < -2¹⁵ + round(p·2¹⁶).
    The result is uint8 rather than bool because multiplying by it vectorises (masked_fill with a bool mask does not).
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(2**63), None, generator=generator)
    return (words.view(torch.int16)[:n].view(shape) >= _INT16_MIN + round(p * 65536)).view(torch.uint8)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_states, p):
        keep = random_keep_mask(hidden_states.shape, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return torch.addcmul(hidden_states.new_zeros(()), hidden_states, keep, value=ctx.scale)  # one pass: x·keep/(1-p)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None


class GPT1Dropout(nn.Dropout):
    """`nn.Dropout` semantics (keep with probability 1-p, survivors scaled by 1/(1-p), independent masks); on CPU the
    mask comes from `random_keep_mask` and is kept for backward as one byte per element rather than a float tensor."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return hidden_states
        if hidden_states.device.type != "cpu" or self.inplace or self.p >= 1.0 or _tracing():
            return F.dropout(hidden_states, self.p, True, self.inplace)
        return _Dropout.apply(hidden_states, self.p)


def _mask_block(attention_mask: torch.Tensor, start: int, end: int, kv_end: int) -> torch.Tensor:
    if attention_mask.shape[-2] == 1:
        return attention_mask[..., :kv_end]
    return attention_mask[..., start:end, :kv_end]


def _block_probs(q_block, k_t, attention_mask, start, end, batch, heads, q_len, kv_len):
    """Softmax, in the inputs' dtype, of query rows [start, end) over the keys they may see; and that key count.
    q_block: (bh, end - start, d), those rows pre-scaled; k_t: (bh, d, kv_len). (bf16 softmax accumulates in fp32 and
    rounds once, as autocast's cast before the P·V matmul does.)"""
    causal = attention_mask is None
    kv_end = kv_len - q_len + end if causal else kv_len  # queries are the last q_len positions (cache-aware)
    scores = torch.bmm(q_block, k_t[:, :, :kv_end])
    rows = end - start
    if causal:  # only the last rows×rows corner holds future keys
        scores[:, :, kv_end - rows :].add_(torch.full((rows, rows), float("-inf"), dtype=scores.dtype).triu_(1))
    elif attention_mask.dtype == torch.bool:  # True = may attend; eager's finfo.min keeps fully-masked rows finite
        scores.view(batch, heads, rows, kv_end).masked_fill_(
            ~_mask_block(attention_mask, start, end, kv_end), torch.finfo(scores.dtype).min
        )
    else:
        scores.view(batch, heads, rows, kv_end).add_(_mask_block(attention_mask, start, end, kv_end))
    return torch.softmax(scores, dim=-1), kv_end


def _transposed(tensor: torch.Tensor, bh: int) -> torch.Tensor:
    """(..., n, d) -> contiguous (bh, d, n): bmm reads it without a per-call transposing copy."""
    out = torch.empty(bh, tensor.shape[-1], tensor.shape[-2], dtype=tensor.dtype)
    out.view(*tensor.shape[:-2], tensor.shape[-1], tensor.shape[-2]).copy_(tensor.transpose(-1, -2))
    return out


class _BlockwiseDropoutAttention(torch.autograd.Function):
    """dropout(softmax(q·kᵀ·scale + mask))·v, one block of query rows at a time, for CPU training.

    Each block touches only the keys it can see (causal: about half the T×T scores), its dropout mask comes from
    `random_keep_mask` and is saved (one byte per element); scores are never stored. With `save_probs` the block's
    probabilities are saved too (bf16: 2 bytes per visible score, ~15 MB per layer at 4×512) and backward skips
    recomputing them; without it backward recomputes them per block (FlashAttention-style). Saved probabilities with
    p = 0 (no mask) are what make this path faster than SDPA's CPU flash kernel in bf16 training. Everything stays
    in the inputs' dtype (bf16 under autocast: no fp32 round trips). Query rows and their output gradients are kept
    as one contiguous tensor per block, because CPU bf16 `bmm` (oneDNN) copies any operand that is neither contiguous
    nor a transposed contiguous tensor; only the key/value prefixes a block sees are sliced. The output is
    (batch, seq, heads, head_dim), as `c_proj` reads it, so the tensor c_proj saves is this one. `packed`, when given,
    is the (batch, seq, 3, heads, head_dim) tensor query/key/value are slices of (`_packed_qkv`): the gradient then
    goes to it, written straight into c_attn's output layout, and query/key/value get none of their own.
    """

    @staticmethod
    def forward(ctx, query, key, value, attention_mask, p, scaling, block, packed, save_probs):
        batch, heads, q_len, head_dim = query.shape
        kv_len, bh = key.shape[2], batch * heads
        spans = [(start, min(q_len, start + block)) for start in range(0, q_len, block)]
        with torch.autocast("cpu", enabled=False):
            q_blocks = []  # per block: its query rows, pre-scaled, contiguous (bh, rows, d)
            for start, end in spans:
                q_block = torch.empty(batch, heads, end - start, head_dim, dtype=query.dtype)
                q_blocks.append(torch.mul(query[:, :, start:end], scaling, out=q_block).view(bh, end - start, head_dim))
            k_t = _transposed(key, bh)
            v = value.reshape(bh, kv_len, head_dim)
            out = torch.empty(batch, q_len, heads, head_dim, dtype=value.dtype)
            masks, saved_probs = [], []  # per block: its keep mask (p > 0), its probabilities (save_probs)
            for q_block, (start, end) in zip(q_blocks, spans):
                probs, kv_end = _block_probs(q_block, k_t, attention_mask, start, end, batch, heads, q_len, kv_len)
                dropped = probs
                if p > 0.0:
                    keep = random_keep_mask(probs.shape, p)
                    masks.append(keep)
                    dropped = probs * keep if save_probs else probs.mul_(keep)
                if save_probs:
                    saved_probs.append(probs)
                block_out = torch.bmm(dropped, v[:, :kv_end])
                out[:, start:end] = block_out.view(batch, heads, end - start, head_dim).transpose(1, 2)
            if p > 0.0:
                out.mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(k_t, v, attention_mask, *q_blocks, *masks, *saved_probs)
        ctx.config = (p, scaling, block, q_len, packed is not None, save_probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        k_t, v, attention_mask, *blocks = ctx.saved_tensors
        p, scaling, block, q_len, packed, save_probs = ctx.config
        n_blocks = -(-q_len // block)  # then as many masks (p > 0) and as many probabilities (save_probs)
        q_blocks, rest = blocks[:n_blocks], blocks[n_blocks:]
        masks = rest[:n_blocks] if p > 0.0 else [None] * n_blocks
        saved_probs = rest[-n_blocks:] if save_probs else [None] * n_blocks
        bh, head_dim, kv_len = k_t.shape
        batch, heads = grad_out.shape[0], bh // grad_out.shape[0]
        if packed:  # write dq, dk, dv into one (batch, seq, 3, heads, head_dim) gradient, in c_attn's output layout
            grad_packed = torch.empty(batch, q_len, 3, heads, head_dim, dtype=v.dtype)
            grad_q, grad_k, grad_v = grad_packed.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            grad_q, grad_k, grad_v = (torch.empty(batch, heads, n, head_dim, dtype=v.dtype) for n in (q_len, kv_len, kv_len))
        # v and k_t are contiguous: the last block reads them as transposed views (no copy); earlier blocks' key
        # prefixes are strided slices, which bf16 bmm copies whichever layout they are sliced from.
        acc = v.dtype if n_blocks == 1 or v.dtype == torch.float64 else torch.float32  # dk, dv sum over blocks
        grad_k_acc = grad_v_acc = None  # (bh, kv_len, head_dim): copied into grad_k/grad_v without transposing
        # Last block first: it sees every key (causal: kv_end = kv_len), so it initialises the sums without a zero fill.
        for q_block, keep, probs, start in reversed(list(zip(q_blocks, masks, saved_probs, range(0, q_len, block)))):
            end = min(q_len, start + block)
            grad_o = torch.empty(batch, heads, end - start, head_dim, dtype=v.dtype)  # contiguous, as q_block
            torch.mul(grad_out[:, start:end].transpose(1, 2), 1.0 / (1.0 - p), out=grad_o)
            grad_o = grad_o.view(bh, end - start, head_dim)
            if probs is None:
                probs, kv_end = _block_probs(q_block, k_t, attention_mask, start, end, batch, heads, q_len, kv_len)
            else:
                kv_end = probs.shape[-1]
            if keep is not None:
                block_grad_v = torch.bmm((probs * keep).transpose(1, 2), grad_o)
                grad_probs = torch.bmm(grad_o, v[:, :kv_end].transpose(1, 2)).mul_(keep)
            else:
                block_grad_v = torch.bmm(probs.transpose(1, 2), grad_o)
                grad_probs = torch.bmm(grad_o, v[:, :kv_end].transpose(1, 2))
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            if attention_mask is not None and attention_mask.dtype == torch.bool:  # masked scores get no gradient
                grad_scores.view(batch, heads, end - start, kv_end).masked_fill_(
                    ~_mask_block(attention_mask, start, end, kv_end), 0
                )
            block_grad_q = torch.bmm(grad_scores, k_t[:, :, :kv_end].transpose(1, 2))
            torch.mul(block_grad_q.view(batch, heads, end - start, head_dim), scaling, out=grad_q[:, :, start:end])
            block_grad_k = torch.bmm(grad_scores.transpose(1, 2), q_block)
            if grad_k_acc is None:
                assert kv_end == kv_len
                grad_k_acc, grad_v_acc = block_grad_k.to(acc), block_grad_v.to(acc)
            else:
                grad_k_acc[:, :kv_end] += block_grad_k
                grad_v_acc[:, :kv_end] += block_grad_v
        grad_k.copy_(grad_k_acc.view(batch, heads, kv_len, head_dim))
        grad_v.copy_(grad_v_acc.view(batch, heads, kv_len, head_dim))
        if packed:
            return None, None, None, None, None, None, None, grad_packed, None
        return grad_q, grad_k, grad_v, None, None, None, None, None, None


def _packed_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """The (batch, seq, 3, heads, head_dim) tensor that query, key and value are the three slices of, as
    `GPT1Attention` makes them from the fused c_attn output; None if they are not (e.g. keys from a KV cache).

    Handing it to autograd lets the blockwise attention write dq, dk and dv into one gradient in c_attn's output
    layout, instead of three gradients that autograd stacks and then copies into that layout (two more passes)."""
    base = query._base
    if base is None or key._base is not base or value._base is not base or not base.is_contiguous():
        return None
    batch, heads, seq, head_dim = query.shape
    if key.shape != query.shape or value.shape != query.shape or base.numel() != 3 * query.numel():
        return None
    packed = base.view(batch, seq, 3, heads, head_dim)
    views = packed.permute(2, 0, 3, 1, 4).unbind(0)
    if any(v.data_ptr() != t.data_ptr() or v.stride() != t.stride() for v, t in zip(views, (query, key, value))):
        return None
    return packed


def gpt1_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GPT-1's default attention: `sdpa`, except for CPU training with attention dropout, where
    `_BlockwiseDropoutAttention` keeps the paper's dropout without SDPA's math fallback, and for CPU bf16 training
    without it, where the same blockwise path (saving its probabilities) beats SDPA's flash kernel by ~25% per layer
    (in fp32 they are even, so fp32 stays on SDPA). (`output_attentions=True` runs eager instead: GPT1Attention.)"""
    bf16_training = query.dtype == torch.bfloat16 and query.requires_grad and query.shape[2] > 1
    if (dropout > 0.0 or bf16_training) and not _tracing() and query.device.type == "cpu" and query.dtype == key.dtype == value.dtype:
        batch, heads, q_len, _ = query.shape
        elements = _BLOCK_ELEMENTS if dropout > 0.0 else 2 * _BLOCK_ELEMENTS  # p = 0 (no masks): larger blocks pay
        block = 1 << max(4, (elements // max(1, batch * heads * key.shape[2])).bit_length() - 1)
        packed = _packed_qkv(query, key, value)
        # 2-byte dtypes (bf16 autocast) keep each block's probabilities for backward: with dropout that is 2 more
        # bytes per visible score next to the 1-byte mask for ~7-20% of the attention's fwd+bwd time; in fp32 it
        # would be 4 bytes for ~5%, so fp32 recomputes them. Without autograd (e.g. the first pass of gradient
        # checkpointing) there is no backward to save them for.
        save_probs = query.element_size() <= 2 and query.requires_grad
        out = _BlockwiseDropoutAttention.apply(
            query, key, value, attention_mask, dropout, scaling, min(block, q_len), packed, save_probs
        )
        return out, None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


AttentionInterface.register(GPT1_ATTENTION, gpt1_attention_forward)
AttentionMaskInterface.register(GPT1_ATTENTION, sdpa_mask)


_CPU_KERNELS = None  # torch.ops.hf_gpt1 (hf-gpt1's compiled bf16 CPU kernels) or False: torch's operators


def _cpu_kernels():
    """The compiled kernels of the hf-gpt1 package (`hf_gpt1.kernels`, built on first use where the CPU has
    AVX512-BF16) as the `torch.ops.hf_gpt1` namespace, or False: torch's operators. Resolved once per process. As
    remote code (`trust_remote_code=True`) without the package installed there is nothing to import: torch's ops."""
    global _CPU_KERNELS
    if _CPU_KERNELS is None:
        try:
            from hf_gpt1.kernels import load_cpu_kernels
        except ImportError:
            _CPU_KERNELS = False
        else:
            _CPU_KERNELS = load_cpu_kernels() or False
    return _CPU_KERNELS


def _project(linear: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`linear(hidden_states)`; for a single bf16 row on CPU without autograd (batch-1 decoding with bf16 weights) a
    one-row product that streams the weight at memory speed, where oneDNN's one-row bf16 GEMM does not: hf-gpt1's
    compiled kernel (about 2x oneDNN's byte rate, docs/performance.md) or else torch's `addmv`."""
    if (
        hidden_states.dtype == torch.bfloat16
        and hidden_states.numel() == hidden_states.shape[-1]
        and linear.weight.dtype == torch.bfloat16
        and hidden_states.device.type == "cpu"
        and not torch.is_grad_enabled()
        and _plain(linear, nn.Linear)
        and not _tracing()
    ):
        row = hidden_states.reshape(-1)
        kernels, bias = _cpu_kernels(), linear.bias
        if kernels and linear.weight.is_contiguous() and row.is_contiguous() and (bias is None or bias.is_contiguous()):
            out = kernels.bf16_addmv(bias, linear.weight, row)
        elif bias is None:
            out = torch.mv(linear.weight, row)
        else:
            out = torch.addmv(bias, linear.weight, row)
        return out.view(*hidden_states.shape[:-1], -1)
    return linear(hidden_states)


class _GeluTanhBF16(torch.autograd.Function):
    """tanh-GELU of a bf16 CPU tensor with hf-gpt1's kernel (same maths as `F.gelu(approximate="tanh")`, computed in
    fp32 and rounded once; saves its input for backward, as torch's GELU does)."""

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hidden_states)
        return _cpu_kernels().gelu_tanh_bf16(hidden_states)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (hidden_states,) = ctx.saved_tensors
        return _cpu_kernels().gelu_tanh_bf16_backward(grad_output.contiguous(), hidden_states)


def _activate(act: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`act(hidden_states)`; the paper's tanh-GELU on contiguous bf16 CPU activations (bf16 autocast training, bf16
    inference) runs on hf-gpt1's compiled kernel where it can: torch's bf16 GELU is compute-bound on CPU, ~5x slower
    than the memory it touches (docs/performance.md)."""
    if (
        hidden_states.dtype == torch.bfloat16
        and hidden_states.device.type == "cpu"
        and hidden_states.is_contiguous()
        and _plain(act, GELUTanh)
        and not _tracing()
        and _cpu_kernels()
    ):
        if torch.is_grad_enabled() and hidden_states.requires_grad:
            return _GeluTanhBF16.apply(hidden_states)
        return _cpu_kernels().gelu_tanh_bf16(hidden_states)  # no autograd: skip Function.apply's ~20 µs
    return act(hidden_states)


class GPT1Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa/flash integrations
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # rows: q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = GPT1Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq, _ = hidden_states.shape
        qkv = _project(self.c_attn, hidden_states).view(batch, seq, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)

        if cache is not None:  # append this step's keys/values, get the whole history back
            key, value = cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions") and implementation in ("sdpa", GPT1_ATTENTION):
            implementation = "eager"  # fused kernels never form the weights; asked for, they come from the written-out softmax
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attn_pdrop if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch, seq, -1)
        return self.resid_dropout(_project(self.c_proj, attn_output)), attn_weights


class GPT1MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, tanh-GELU (paper §4.1)."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.act = ACT2FN[config.afn]
        self.dropout = GPT1Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(_project(self.c_proj, _activate(self.act, _project(self.c_fc, hidden_states))))


class _DecodePlan:
    """What `_decode_plan` established about one block: its modules are exactly the plain kinds, in eval mode, unhooked,
    with contiguous CPU weights of one dtype (bf16 or fp32). Kept (per block, weakly) so that later tokens only
    re-check that none of it has changed, through the modules' own dicts: ~20 µs per block on this VM instead of ~90 µs
    of module attribute lookups."""

    def __init__(self, block: GPT1Block):
        attn, mlp = block.attn, block.mlp
        kinds = {"attn": GPT1Attention, "mlp": GPT1MLP, "ln_1": nn.LayerNorm, "ln_2": nn.LayerNorm, "c_attn": nn.Linear,
                 "c_proj": nn.Linear, "resid_dropout": GPT1Dropout, "c_fc": nn.Linear, "act": GELUTanh, "dropout": GPT1Dropout}  # fmt: skip
        parents = [(block, name) for name in ("attn", "mlp", "ln_1", "ln_2")]
        parents += [(attn, name) for name in ("c_attn", "c_proj", "resid_dropout")]
        parents += [(mlp, name) for name in ("c_fc", "c_proj", "act", "dropout")]
        # (parent's submodule dict, name, module, the kind it must be)
        self.slots = tuple((parent._modules, name, parent._modules.get(name), kinds[name]) for parent, name in parents)
        self.valid = all(_plain(module, kind) for _, _, module, kind in self.slots)
        if not self.valid:  # e.g. PEFT-wrapped layers: the modules run (and the plan is rebuilt each call)
            return
        self.modules = (block, *(module for _, _, module, _ in self.slots))
        self.hooks = tuple(frozenset(module._forward_hooks) for module in self.modules)  # transformers' recorders only
        weighted = (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj, block.ln_1, block.ln_2)
        self.params = tuple((m._parameters, name, m._parameters.get(name)) for m in weighted for name in ("weight", "bias"))
        self.config, self.ln_1, self.eps = attn.config, block.ln_1, block.ln_1.eps
        self.dtype = attn.c_attn.weight.dtype if attn.c_attn.weight.dtype in _DECODE_DTYPES else None
        self.qkv = (attn.c_attn.bias, attn.c_attn.weight, attn.n_head, attn.head_dim, attn.layer_idx)
        self.rest = (
            attn.c_proj.weight, attn.c_proj.bias, block.ln_1.weight, block.ln_1.bias,
            mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias, block.ln_2.weight, block.ln_2.bias,
            attn.scaling, block.ln_1.eps,
        )  # fmt: skip
        self.valid = self.dtype is not None and block.ln_2.eps == self.eps and attn.head_dim <= 256 and self.holds()

    def holds(self) -> bool:
        """Still true of the block: the same modules, hooks, modes and parameters, the latter still of one dtype on
        CPU."""
        if not self.valid:
            return False
        for modules, name, module, _ in self.slots:
            if modules.get(name) is not module:
                return False
        for module, hooks in zip(self.modules, self.hooks):
            state = module.__dict__
            if (
                module.training
                or module._forward_pre_hooks
                or module._forward_hooks.keys() != hooks
                or "_hf_hook" in state
                or "forward" in state  # a patched forward (Accelerate's hooks do this)
            ):
                return False
        for params, name, param in self.params:
            if params.get(name) is not param:
                return False
            if param is not None and (param.dtype != self.dtype or not param.is_cpu or not param.is_contiguous()):
                return False
        return True


_DECODE_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DECODE_DTYPES = (torch.bfloat16, torch.float32)  # what `hf_gpt1::decode_block` computes in
# Attention implementations that, for one query over an unmasked cache, are what the decode block computes (a
# named `eager` is honoured: the modules run).
_DECODE_ATTENTIONS = frozenset(("sdpa", GPT1_ATTENTION))


def _decode_plan(block: GPT1Block, hidden_states: torch.Tensor, attention_mask, kwargs: dict) -> _DecodePlan | None:
    """The block's `_DecodePlan` if this call is one token of batch-1 decoding (bf16 or fp32) that `_decode_block`
    runs exactly as the modules would (plain Linear/LayerNorm/GELU modules with weights of the activations' dtype, no
    hooks, no adapters, eval mode, no autograd, no mask, no attention weights asked for, the default attention, the
    compiled kernels present), else None: the modules run."""
    if (
        hidden_states.dtype not in _DECODE_DTYPES
        or hidden_states.numel() != hidden_states.shape[-1]
        or attention_mask is not None
        or torch.is_grad_enabled()
        or torch.is_autocast_enabled("cpu")  # autocast would recast inside the fp32 block: the modules keep its rules
        or hidden_states.device.type != "cpu"
        or kwargs.get("output_attentions")
        or _GLOBAL_HOOKS[0]
        or _GLOBAL_HOOKS[1]
        or _tracing()
    ):
        return None
    kernels = _cpu_kernels()
    if not kernels or not _has_op(kernels, "decode_block"):
        return None
    plan = _DECODE_PLANS.get(block)
    if plan is None or not plan.holds():
        plan = _DECODE_PLANS[block] = _DecodePlan(block)
    if (
        not plan.valid
        or plan.dtype != hidden_states.dtype
        or _attn_implementation(plan.config) not in _DECODE_ATTENTIONS
        or plan.ln_1.eps != plan.eps
    ):
        return None
    return plan


def _attn_implementation(config: PretrainedConfig) -> str | None:
    """`config._attn_implementation`, read where the property keeps it without PretrainedConfig's attribute-map lookup
    (~4 µs a read on this VM, 12 reads per token); the property itself if that attribute is not there."""
    try:
        return object.__getattribute__(config, "_attn_implementation_internal")
    except AttributeError:
        return config._attn_implementation


def _has_op(kernels, name: str) -> bool:
    """Whether the installed hf-gpt1 package's kernels include `name` (this file may ship as remote code next to a
    checkpoint and meet an older package)."""
    if name not in _OPS_PRESENT:
        _OPS_PRESENT[name] = hasattr(kernels, name)
    return _OPS_PRESENT[name]


_OPS_PRESENT: dict[str, bool] = {}


def _decode_block(plan: _DecodePlan, hidden_states: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    """The block for one token: the q/k/v product, the cache update (any `Cache`), then one compiled call for
    attention, output projection, both residual LayerNorms and the MLP (`kernels/decode_block.cpp`). Once the products
    stream at memory speed, the ~25 small operators of a block cost ~0.3 ms per block in dispatch alone."""
    kernels = _cpu_kernels()
    bias, weight, heads, head_dim, layer_idx = plan.qkv
    row = hidden_states.reshape(-1)
    if plan.dtype == torch.bfloat16:
        qkv = kernels.bf16_addmv(bias, weight, row)
    else:
        qkv = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
    query, key, value = qkv.view(3, 1, heads, 1, head_dim).unbind(0)  # each (1, heads, 1, head_dim)
    if cache is not None:
        key, value = cache.update(key, value, layer_idx)
    return kernels.decode_block(hidden_states, query, key, value, *plan.rest)


def _plain(module: nn.Module, kind: type) -> bool:
    """`module` is exactly a `kind` (not a subclass or a PEFT wrapper) and no hook would see (or change) its call: no
    forward hooks but transformers' output recorders (installed on the attention modules once any output is recorded,
    inactive unless `output_attentions` is asked for, which `_decode_plan` checks), no pre-hooks, no Accelerate
    hook (device offloading replaces `forward`)."""
    return (
        type(module) is kind
        and not module._forward_pre_hooks
        and not hasattr(module, "_hf_hook")
        and all(getattr(hook, "__module__", None) == _OUTPUT_RECORDERS for hook in module._forward_hooks.values())
    )


_OUTPUT_RECORDERS = "transformers.utils.output_capturing"
# torch's global module hooks (nn.modules.module.register_module_forward_[pre_]hook): they would see the modules run.
_GLOBAL_HOOKS = tuple(getattr(nn.modules.module, name, {}) for name in ("_global_forward_hooks", "_global_forward_pre_hooks"))


class GPT1Block(GradientCheckpointingLayer):
    """One post-LayerNorm transformer block: h = LN(x + attn(x)); out = LN(h + mlp(h))."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.attn = GPT1Attention(config, layer_idx)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT1MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        plan = _decode_plan(self, hidden_states, attention_mask, kwargs)
        if plan is not None:  # one token of batch-1 decoding: the block in two calls around the cache update
            return _decode_block(plan, hidden_states, cache)
        attn_output, _ = self.attn(hidden_states, attention_mask, cache, **kwargs)
        hidden_states = self.ln_1(hidden_states + attn_output)
        return self.ln_2(hidden_states + self.mlp(hidden_states))


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class GPT1ClassifierOutput(ModelOutput):
    """Output of the fine-tuning heads (sequence classification, similarity, multiple choice).

    loss: L3 = task_loss + lm_coef * lm_loss (the paper's fine-tuning objective), when `labels` are given.
    logits: (batch, num_labels) for classification/regression, (batch, num_choices) for multiple choice.
    task_loss / lm_loss: the two parts of `loss`, so training code can log them separately
        (`config.keys_to_ignore_at_inference` keeps them out of Trainer's gathered predictions).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    task_loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class GPT1DoubleHeadsModelOutput(ModelOutput):
    """Same fields as `transformers.OpenAIGPTDoubleHeadsModelOutput`: `loss` is the LM loss, `mc_loss` the choice loss."""

    loss: torch.Tensor | None = None
    mc_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mc_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained-model plumbing
# ----------------------------------------------------------------------------------------------------------------------


class GPT1PreTrainedModel(PreTrainedModel):
    config: GPT1Config
    config_class = GPT1Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT1Block"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": GPT1Block,
        "attentions": OutputRecorder(GPT1Attention, index=1),
    }
    # `openai-gpt` checkpoints carry the causal mask as a buffer; we build masks per call instead.
    _keys_to_ignore_on_load_unexpected = [r"\.attn\.bias$"]

    def train(self, mode: bool = True):
        """`nn.Module.train`; leaving training also lets go of the tied token table's reused training buffers (the
        LM head's bf16 table copy and gradient, the lookup's dense gradient: ~250 MB for the released vocabulary),
        which inference never reads. They are made again by the next training step that needs them; a backward pass
        still pending keeps the ones its graph holds."""
        if not mode:
            self.__dict__.pop("_bf16_table_copies", None)
            if "_lookup_gradient" in self.__dict__:
                self._lookup_gradient = self.tied_table = None
        return super().train(mode)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """N(0, initializer_range) for weights and embeddings, zero biases, unit LayerNorm (paper §4.1)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus checkpoints in transformers' `openai-gpt` layout.

        An `openai-gpt` folder or Hub id (e.g. `openai-community/openai-gpt`) is converted on the fly:
        its config becomes a `GPT1Config` and its Conv1D weights are transposed into our Linear layout.
        """
        config = kwargs.get("config")
        if pretrained_model_name_or_path is not None and (config is None or isinstance(config, (str, os.PathLike))):
            source = config if config is not None else pretrained_model_name_or_path
            hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            try:
                config_dict, _ = PretrainedConfig.get_config_dict(source, **hub_kwargs)
            except OSError:
                config_dict = {}  # let the regular path raise its usual, detailed error
            model_type = config_dict.get("model_type")
            if model_type == "openai-gpt":
                return cls._from_openai_gpt(pretrained_model_name_or_path, config_dict, *model_args, **kwargs)
            if model_type not in (None, GPT1Config.model_type):
                # transformers would only warn and then initialise a GPT-1 from scratch around foreign weights.
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a '{model_type}' checkpoint; {cls.__name__} loads 'gpt1' "
                    f"checkpoints (and converts transformers' 'openai-gpt' ones). Load it with its own class, or "
                    f"point to a GPT-1 checkpoint."
                )
        elif isinstance(config, PretrainedConfig) and config.model_type == "openai-gpt":
            return cls._from_openai_gpt(pretrained_model_name_or_path, config.to_dict(), *model_args, **kwargs)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":
                raise
            raise OSError(
                f"Could not read the weights of {pretrained_model_name_or_path}: {err}. The safetensors file is "
                f"truncated or corrupted (an interrupted download, copy or save); re-download or re-save it."
            ) from err

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """`PreTrainedModel.push_to_hub`, then hf-gpt1's model card (Hub metadata, hyperparameters, the paper's
        citation) replaces transformers' generic README. As remote code without the plugin: the generic card."""
        result = super().push_to_hub(repo_id, *args, **kwargs)
        try:
            from hf_gpt1.hub import upload_model_card
        except ImportError:
            return result
        upload_model_card(self, repo_id, token=kwargs.get("token"), revision=kwargs.get("revision"))
        return result

    @classmethod
    def _from_openai_gpt(cls, path, openai_config: dict, *model_args, **kwargs):
        from transformers.utils import cached_file

        kwargs.pop("config", None)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config = config_from_openai_gpt(openai_config)
        for key in list(kwargs):  # config overrides such as num_labels=3, as from_pretrained accepts them
            if hasattr(config, key) and key not in _HUB_KWARGS:
                setattr(config, key, kwargs.pop(key))
        weights_file = None
        for name in ("model.safetensors", "pytorch_model.bin"):
            weights_file = cached_file(path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
            if weights_file is not None:
                break
        if weights_file is None:
            raise OSError(f"{path} has an openai-gpt config but neither model.safetensors nor pytorch_model.bin.")
        if weights_file.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(weights_file)
        else:  # never unpickle arbitrary objects from a checkpoint
            state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)
        state_dict = convert_openai_gpt_state_dict(state_dict, cls, config)
        logger.info(f"Converted openai-gpt checkpoint {path} to the gpt1 layout ({len(state_dict)} tensors).")
        for key in _HUB_KWARGS:
            kwargs.pop(key, None)
        return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def config_from_openai_gpt(openai_config: dict) -> GPT1Config:
    """Map a transformers `OpenAIGPTConfig` dict onto `GPT1Config` (same attribute names, by design)."""
    keep = (
        "vocab_size n_positions n_embd n_layer n_head afn resid_pdrop embd_pdrop attn_pdrop layer_norm_epsilon "
        "initializer_range id2label label2id problem_type pad_token_id bos_token_id eos_token_id"
    ).split()
    values = {k: openai_config[k] for k in keep if openai_config.get(k) is not None}
    if "summary_first_dropout" in openai_config:
        values["clf_pdrop"] = openai_config["summary_first_dropout"]
    return GPT1Config(**values)


def convert_openai_gpt_state_dict(
    state_dict: dict[str, torch.Tensor], model_class: type[GPT1PreTrainedModel], config: GPT1Config
) -> dict[str, torch.Tensor]:
    """Rename/transpose an `openai-gpt` state dict (any of its head classes) into `model_class`'s layout.

    Conv1D stores [in, out]; nn.Linear stores [out, in]. Keys we cannot place are reported by name.
    """
    converted, unmapped, lm_head = {}, [], None
    has_score_bias = "score.bias" in state_dict
    for key, tensor in state_dict.items():
        name = key[len("transformer.") :] if key.startswith("transformer.") else key
        if name.startswith(("tokens_embed.", "positions_embed.")):
            converted[f"transformer.{name}"] = tensor
        elif name.startswith("h.") and name.endswith(".attn.bias"):
            continue  # the reference's causal-mask buffer
        elif name.startswith("h."):
            is_conv_weight = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
            converted[f"transformer.{name}"] = tensor.t().contiguous() if is_conv_weight else tensor
        elif name == "lm_head.weight":
            lm_head = tensor  # tied to tokens_embed; some reference heads save only this side of the tie
        elif name.startswith("multiple_choice_head.summary."):
            target = "multiple_choice_head.summary." if model_class.__name__ == "GPT1DoubleHeadsModel" else "score."
            converted[target + name.rsplit(".", 1)[1]] = tensor
        elif name == "score.weight":
            converted["score.weight"] = tensor
        else:
            unmapped.append(key)
    if "transformer.tokens_embed.weight" not in converted and lm_head is not None:
        converted["transformer.tokens_embed.weight"] = lm_head
    if "score.weight" in converted and not has_score_bias and "multiple_choice_head" not in " ".join(state_dict):
        converted["score.bias"] = torch.zeros(converted["score.weight"].shape[0], dtype=converted["score.weight"].dtype)
    if unmapped:
        logger.warning(
            f"openai-gpt checkpoint: {len(unmapped)} tensor(s) have no counterpart in {model_class.__name__} and were "
            f"dropped: {', '.join(unmapped[:10])}{' ...' if len(unmapped) > 10 else ''}"
        )
    expected = f"[{config.vocab_size}, {config.n_embd}]"
    tokens = converted.get("transformer.tokens_embed.weight")
    if tokens is None:
        raise ValueError("openai-gpt checkpoint has no tokens_embed.weight; it is not a GPT-1 checkpoint.")
    if list(tokens.shape) != [config.vocab_size, config.n_embd]:
        raise ValueError(f"openai-gpt checkpoint: tokens_embed.weight is {list(tokens.shape)}, config says {expected}.")
    return converted


# ----------------------------------------------------------------------------------------------------------------------
# The tied token table in CPU training
# ----------------------------------------------------------------------------------------------------------------------
# The 40478×768 table is used twice, by the token lookup and by the LM head. With plain modules each use gets fresh
# table-sized tensors every step, which on CPU cost more than their arithmetic (fresh memory is paged in on first
# touch): autocast's bf16 copy of the table and the bf16 gradient of it, and the lookup's zero-filled dense gradient
# (~0.2 s per 4×512 bf16 step on 2 cores). `_TiedLMHead` keeps the bf16 copies in buffers it reuses; `_TokenLookup`
# reuses its dense gradient when the LM head has delivered one in the same backward pass (autograd then adds the two
# into the LM head's and lets go of the lookup's, so reusing it next step is invisible).


class _LookupGradient:
    """The token lookup's reused dense gradient: zero except the rows the previous backward wrote, which the next one
    zeroes first (at most batch·seq rows, instead of filling a fresh table-sized tensor)."""

    def __init__(self):
        self.tensor: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def of(self, ids: torch.Tensor, grad: torch.Tensor, num_rows: int) -> torch.Tensor:
        """The table's gradient for `grad` (rows, dim) at row indices `ids`, as `embedding_dense_backward`."""
        if self.tensor is None or self.tensor.shape != (num_rows, grad.shape[-1]) or self.tensor.dtype != grad.dtype:
            self.tensor = grad.new_zeros(num_rows, grad.shape[-1])
        elif self.rows is not None:
            self.tensor.index_fill_(0, self.rows, 0)
        self.rows = ids
        return self.tensor.index_add_(0, ids, grad)


class _TiedTable:
    """One forward pass's link between the token lookup and the LM head tied to it: the backward pass (autograd's graph
    task) in which the LM head delivered its dense gradient of the table, if any."""

    def __init__(self, lookup_gradient: _LookupGradient):
        self.lookup_gradient = lookup_gradient
        self.dense_gradient_task: int | None = None

    def deliver_dense_gradient(self) -> None:
        self.dense_gradient_task = _backward_pass()

    def dense_gradient_delivered(self) -> bool:
        return self.dense_gradient_task is not None and self.dense_gradient_task == _backward_pass()


def _backward_pass() -> int | None:
    task = getattr(torch._C, "_current_graph_task_id", None)  # private (torch.utils.checkpoint uses it): optional
    return task() if task is not None else None


class _TokenLookup(torch.autograd.Function):
    """`F.embedding(ids, table)`. Backward writes the table's gradient into `tied`'s reused tensor when the tied LM head
    has already delivered a dense gradient of the table in this backward pass (and the pass builds no graph of its
    own); otherwise it returns a fresh one, as nn.Embedding does."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, table: torch.Tensor, tied: _TiedTable) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows, ctx.tied = table.shape[0], tied
        return F.embedding(ids, table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        ids, grad = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if ctx.tied.dense_gradient_delivered() and not torch.is_grad_enabled():
            return None, ctx.tied.lookup_gradient.of(ids, grad, ctx.rows), None
        return None, torch.ops.aten.embedding_dense_backward(grad, ids, ctx.rows, -1, False), None


class _BF16TableCopies:
    """Reused bf16 buffers for the table and its gradient (not parameters or buffers of the model: not saved, not
    moved by `.to()`). `generation` counts the table copies, so a backward can tell its copy was overwritten."""

    def __init__(self):
        self.table = self.grad = None
        self.generation = 0

    def copy_of(self, weight: torch.Tensor) -> torch.Tensor:
        if self.table is None or self.table.shape != weight.shape:
            self.table = torch.empty(weight.shape, dtype=torch.bfloat16)
            self.grad = torch.empty(weight.shape, dtype=torch.bfloat16)
        self.generation += 1
        return self.table.copy_(weight)


class _TiedLMHead(torch.autograd.Function):
    """hidden · tableᵀ (the LM head); with `copies`, in bf16 as CPU autocast computes it, from a reused bf16 copy of
    the table. Backward tells `tied` its dense gradient of the table has been delivered."""

    @staticmethod
    def forward(ctx, hidden, weight, copies: _BF16TableCopies | None, tied: _TiedTable | None):
        ctx.save_for_backward(hidden, weight)
        ctx.copies, ctx.tied = copies, tied
        if copies is None:
            return hidden @ weight.t()
        ctx.generation = copies.generation + 1
        return hidden @ copies.copy_of(weight).t()

    @staticmethod
    def backward(ctx, grad):
        hidden, weight = ctx.saved_tensors
        copies = ctx.copies
        if copies is not None:  # its own copy, unless a later forward has overwritten it (then a fresh one)
            weight = copies.table if copies.generation == ctx.generation else weight.to(torch.bfloat16)
        grad_hidden = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_rows, hidden_rows = grad.reshape(-1, grad.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
            if copies is None:
                grad_weight = grad_rows.t() @ hidden_rows
            else:
                grad_weight = torch.mm(grad_rows.t(), hidden_rows, out=copies.grad).float()
            if ctx.tied is not None:
                ctx.tied.deliver_dense_gradient()
        return grad_hidden, grad_weight, None, None


def _lm_head_logits(model: GPT1PreTrainedModel, hidden_states: torch.Tensor) -> torch.Tensor:
    """`model.lm_head(hidden_states)`; in CPU training through `_TiedLMHead` (see above), elsewhere `_project`."""
    head = model.lm_head
    if not (
        torch.is_grad_enabled()
        and _plain(head, nn.Linear)
        and head.bias is None
        and head.weight.device.type == "cpu"
        and hidden_states.device.type == "cpu"
        and not _tracing()
    ):
        return _project(head, hidden_states)
    transformer = model.transformer
    tied = transformer.tied_table if head.weight is transformer.tokens_embed.weight else None
    if torch.is_autocast_enabled("cpu"):
        if torch.get_autocast_dtype("cpu") != torch.bfloat16 or head.weight.dtype != torch.float32:
            return head(hidden_states)
        copies = model.__dict__.get("_bf16_table_copies")
        if copies is None:
            copies = model._bf16_table_copies = _BF16TableCopies()
        with torch.autocast("cpu", enabled=False):
            return _TiedLMHead.apply(hidden_states.to(torch.bfloat16), head.weight, copies, tied)
    if hidden_states.dtype != head.weight.dtype:
        return head(hidden_states)
    return _TiedLMHead.apply(hidden_states, head.weight, None, tied)


# ----------------------------------------------------------------------------------------------------------------------
# The base model
# ----------------------------------------------------------------------------------------------------------------------


# What `**kwargs` of a forward may carry: transformers' model-agnostic keyword arguments (outputs to record, attention
# arguments passed on to the attention function, Trainer's `num_items_in_batch`), as its own models type them.
# Anything else would be accepted and silently ignored, so it is an error instead.
ACCEPTED_MODEL_KWARGS = frozenset(TransformersKwargs.__optional_keys__) | frozenset(TransformersKwargs.__required_keys__)


def check_model_kwargs(model: nn.Module, kwargs: dict) -> None:
    """Raise a TypeError naming every keyword argument in `kwargs` that no GPT-1 forward uses."""
    unknown = sorted(set(kwargs) - ACCEPTED_MODEL_KWARGS)
    if unknown:
        raise TypeError(
            f"{type(model).__name__}.forward() got keyword argument(s) it does not use: {', '.join(unknown)}. It takes "
            f"its named arguments plus transformers' model kwargs ({', '.join(sorted(ACCEPTED_MODEL_KWARGS))}); "
            f"check the spelling, or drop arguments meant for another model."
        )


def _tracing() -> bool:
    """Inside torch.compile or torch.export: input checks that read tensor values are skipped there (they would be
    host syncs); eager calls keep their clear errors."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.compiler.is_compiling() or (exporting is not None and exporting())


class GPT1Model(GPT1PreTrainedModel):
    """The bare decoder. Accepts any leading shape, e.g. (batch, choices, seq), and keeps it in the output."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = GPT1Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT1Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.tied_table: _TiedTable | None = None
        self._lookup_gradient: _LookupGradient | None = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tokens_embed

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.tokens_embed = new_embeddings

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """token_type_ids: optional ids embedded with the token table and added to the input, as in the original
        code and transformers' `OpenAIGPTModel` (GPT-1 has no separate segment table)."""
        check_model_kwargs(self, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPT1Model: pass exactly one of input_ids or inputs_embeds.")
        # The config's output_attentions reaches the attention modules too (they switch to eager to form the weights).
        kwargs.setdefault("output_attentions", self.config.output_attentions)
        self.tied_table = None  # set by the token lookup in CPU training
        # Fold leading dims (batch, choices, ...) into one batch dim; restored at the end.
        leading_shape = input_ids.shape[:-1] if input_ids is not None else inputs_embeds.shape[:-2]
        if input_ids is not None:
            input_ids = input_ids.reshape(-1, input_ids.shape[-1])
            if not _tracing():  # reads values: a host sync that torch.compile/export cannot trace
                self._check_input_ids(input_ids)
            inputs_embeds = self._look_up(input_ids)
        else:
            inputs_embeds = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])
        seq_len = inputs_embeds.shape[1]
        if attention_mask is not None and attention_mask.dim() < 4:
            attention_mask = attention_mask.reshape(inputs_embeds.shape[0], -1)
        if position_ids is not None:
            position_ids = position_ids.reshape(-1, position_ids.shape[-1])

        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
        past_seen = cache.get_seq_length() if cache is not None else 0

        if position_ids is None:
            position_ids = self._position_ids(attention_mask, past_seen, seq_len, inputs_embeds.device)
        if not _tracing() and (
            past_seen + seq_len > self.config.n_positions or int(position_ids.max()) >= self.config.n_positions
        ):
            raise ValueError(
                f"GPT-1 has {self.config.n_positions} learned positions, but this call needs positions up to "
                f"{max(past_seen + seq_len, int(position_ids.max()) + 1)} (cached {past_seen} + {seq_len} new tokens). "
                f"Truncate inputs to at most n_positions={self.config.n_positions} tokens (tokenizer: "
                f"truncation=True, max_length={self.config.n_positions})."
            )
        hidden_states = inputs_embeds + self.positions_embed(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.tokens_embed(token_type_ids.reshape(-1, token_type_ids.shape[-1]))
        hidden_states = self.drop(hidden_states)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        for block in self.h:
            hidden_states = block(hidden_states, causal_mask, cache, position_ids=position_ids, **kwargs)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states.reshape(*leading_shape, seq_len, -1),
            cache=cache if use_cache else None,
        )

    def _look_up(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`tokens_embed(input_ids)`; in CPU training through `_TokenLookup`, whose `_TiedTable` (kept in
        `self.tied_table` for the LM head of this forward pass) lets it reuse its gradient tensor (see above)."""
        table = self.tokens_embed
        if (
            _plain(table, nn.Embedding)
            and table.weight.requires_grad
            and torch.is_grad_enabled()
            and table.weight.device.type == "cpu"
            and table.padding_idx is None
            and table.max_norm is None
            and not table.scale_grad_by_freq
            and not table.sparse
            and not _tracing()
        ):
            if self._lookup_gradient is None:
                self._lookup_gradient = _LookupGradient()
            self.tied_table = _TiedTable(self._lookup_gradient)
            return _TokenLookup.apply(input_ids, table.weight, self.tied_table)
        return table(input_ids)

    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        # An id past the table would be an opaque "index out of range" deep inside F.embedding.
        # PEFT may wrap tokens_embed (trainable token rows); config.vocab_size follows resize_token_embeddings.
        vocab = getattr(self.tokens_embed, "num_embeddings", None) or self.config.vocab_size
        if input_ids.numel() and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
            bad = int(input_ids.max()) if int(input_ids.max()) >= vocab else int(input_ids.min())
            raise ValueError(
                f"input_ids contain id {bad}, outside the embedding table [0, {vocab}). If the tokenizer has added "
                f"tokens (e.g. GPT-1's start/delimiter/extract/pad), call hf_gpt1.add_special_tokens(model, tokenizer) "
                f"so the embeddings are resized and the ids recorded in the config."
            )

    @staticmethod
    def _position_ids(attention_mask, past_seen: int, seq_len: int, device) -> torch.Tensor:
        """Absolute positions counted over real tokens, so a left-padded row starts at position 0 like an
        unpadded one (matters for incremental decoding of padded batches). Without padding: past_seen + arange."""
        plain = (torch.arange(seq_len, device=device) + past_seen).unsqueeze(0)
        if attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[-1] < seq_len:
            return plain
        counted = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
        # A mask without padding keeps past_seen + arange (whatever length it has); chosen without a host sync.
        return torch.where(attention_mask.bool().all(-1, keepdim=True), plain, counted)


# ----------------------------------------------------------------------------------------------------------------------
# Language-modelling loss over the 40k-token vocabulary
# ----------------------------------------------------------------------------------------------------------------------

_LOSS_CHUNK_ELEMENTS = 1 << 20  # logits per chunk: 4 MiB in fp32, stays in cache between the passes over it


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of (N, V) logits, computed in fp32 a few rows at a time.

    `F.cross_entropy(logits.float(), ...)` writes an fp32 copy of all N×V logits, an fp32 log-softmax of the same size
    and, in backward, a zero-filled N×V gradient and the log-softmax gradient: four passes through fresh memory that
    cost more than the vocabulary projection itself on CPU (bf16 logits of a 2048-token batch are 166 MB). Here each
    chunk is upcast, reduced to its log-sum-exp and target logit, and forgotten; backward recomputes the chunk's softmax
    and writes (softmax − one-hot)·grad straight into a gradient of the logits' own dtype. Only the logits (which
    exist anyway) and one fp32 number per row are kept. Same maths as `F.cross_entropy(..., reduction="none")`:
    ignored rows get loss 0 and no gradient. bf16 logits on a CPU with AVX512-BF16 go through hf-gpt1's kernel
    (`hf_gpt1/kernels/cross_entropy_bf16.cpp`): the same two passes per row, on the bf16 row itself.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index):
        rows, vocab = logits.shape
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, 0).unsqueeze(1)
        bf16_cpu = logits.dtype == torch.bfloat16 and logits.device.type == "cpu" and logits.is_contiguous()
        ctx.kernels = _cpu_kernels() if bf16_cpu else False
        if ctx.kernels:  # bf16 logits (autocast): hf-gpt1's kernel reads each bf16 row in place, no fp32 copies
            lse, picked = ctx.kernels.cross_entropy_bf16(logits, safe_targets.view(-1))
        else:
            lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
            picked = torch.empty(rows, dtype=torch.float32, device=logits.device)
            step = max(1, _LOSS_CHUNK_ELEMENTS // vocab)
            for start in range(0, rows, step):
                chunk = logits[start : start + step].float()
                torch.logsumexp(chunk, dim=-1, out=lse[start : start + step])
                picked[start : start + step] = chunk.gather(1, safe_targets[start : start + step]).squeeze(1)
        ctx.save_for_backward(logits, safe_targets, valid, lse)
        return torch.where(valid, lse - picked, 0.0)

    @staticmethod
    def backward(ctx, grad_losses):
        logits, safe_targets, valid, lse = ctx.saved_tensors
        rows, vocab = logits.shape
        scale = (grad_losses.float() * valid).unsqueeze(1)  # (rows, 1): ignored rows get no gradient
        if ctx.kernels:
            grad_logits = ctx.kernels.cross_entropy_bf16_backward(logits, safe_targets.view(-1), lse, scale.view(-1))
            return grad_logits, None, None
        grad_logits = torch.empty_like(logits)
        step = max(1, _LOSS_CHUNK_ELEMENTS // vocab)
        for start in range(0, rows, step):
            end = min(rows, start + step)
            probs = (logits[start:end].float() - lse[start:end].unsqueeze(1)).exp_()  # softmax, from the saved lse
            probs.scatter_add_(1, safe_targets[start:end], torch.full((end - start, 1), -1.0, device=probs.device))
            grad_logits[start:end] = probs.mul_(scale[start:end])
        return grad_logits, None, None


def lm_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per-token losses (fp32, 0 where `targets == ignore_index`) of logits (..., V) against targets (...), as
    `F.cross_entropy(logits.float(), targets, reduction="none")`; chunked on CPU (see `_ChunkedCrossEntropy`)."""
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    if logits.device.type != "cpu" or _tracing():  # GPU kernels / compiled graphs fuse the N×V intermediates
        losses = F.cross_entropy(flat_logits.float(), flat_targets, ignore_index=ignore_index, reduction="none")
    else:
        scored = flat_targets[flat_targets != ignore_index]
        if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= flat_logits.shape[-1]):
            bad = int(scored.min()) if int(scored.min()) < 0 else int(scored.max())
            raise ValueError(
                f"LM labels contain {bad}, outside the vocabulary [0, {flat_logits.shape[-1]}). Labels must be token ids "
                f"of this model's vocabulary, or {ignore_index} for positions that are not scored."
            )
        losses = _ChunkedCrossEntropy.apply(flat_logits, flat_targets, ignore_index)
    return losses.view(targets.shape)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """transformers' `ForCausalLMLoss` (labels shifted inside; mean over scored tokens, or sum / num_items_in_batch
    when Trainer passes it for gradient accumulation), with the fp32 cross-entropy computed by `lm_cross_entropy`."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    shift_labels = shift_labels.reshape(-1).to(logits.device)
    token_losses = lm_cross_entropy(logits.reshape(-1, logits.shape[-1]), shift_labels, ignore_index)
    if num_items_in_batch is None:
        return token_losses.sum() / (shift_labels != ignore_index).sum()  # 0/0 = nan with no scored token, as F.cross_entropy
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(token_losses.device)
    return token_losses.sum() / num_items_in_batch


# ----------------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------------


class GPT1ForCausalLM(GPT1PreTrainedModel, GenerationMixin):
    """GPT-1 with its language-modelling head (the pretraining objective L1), tied to the token embedding."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """`labels` are shifted inside (set labels = input_ids); -100 marks positions that are not scored."""
        check_model_kwargs(self, kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = _lm_head_logits(self, hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


GPT1LMHeadModel = GPT1ForCausalLM  # the name users of OpenAIGPTLMHeadModel reach for


class _GPT1FineTuningHeadMixin:
    """Shared by the fine-tuning heads: find h_l^m at the extract token, and the auxiliary LM loss L1."""

    # Trainer must not pass num_items_in_batch: it would count *task* labels, which says nothing about how
    # many tokens the auxiliary LM loss averages over. Our losses are means; Trainer rescales for accumulation.
    accepts_loss_kwargs = False

    def extract_positions(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        seq_shape: torch.Size,
        device: torch.device,
    ) -> torch.Tensor:
        """Index of the extract token in every sequence: the last `extract_token_id` if the config knows it,
        else the last non-padding token (what `pipeline(...)` callers without `mc_token_ids` get)."""
        seq_len = seq_shape[-1]
        index = torch.arange(seq_len, device=device)
        if attention_mask is not None:
            last_real = (attention_mask.reshape(seq_shape).long() * index).argmax(-1)
        elif input_ids is not None and self.config.pad_token_id is not None:
            last_real = ((input_ids != self.config.pad_token_id).long() * index).argmax(-1)
        else:
            last_real = torch.full(seq_shape[:-1], seq_len - 1, device=device, dtype=torch.long)
        if input_ids is None or self.config.extract_token_id is None:
            return last_real
        is_extract = input_ids == self.config.extract_token_id
        last_extract = (is_extract.long() * index).argmax(-1)
        return torch.where(is_extract.any(-1), last_extract, last_real)

    @staticmethod
    def gather_at(hidden_states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """hidden_states (..., seq, E), positions (...) -> (..., E)."""
        index = positions.unsqueeze(-1).unsqueeze(-1).expand(*positions.shape, 1, hidden_states.shape[-1])
        return hidden_states.gather(-2, index).squeeze(-2)

    def auxiliary_lm_loss(
        self,
        hidden_states: torch.Tensor,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        lm_labels: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """L1 on the task inputs themselves: predict every next token, padding excluded (mean per sequence,
        then over sequences)."""
        if lm_labels is None:
            if input_ids is None:
                return None
            lm_labels = input_ids
            if attention_mask is not None:
                lm_labels = lm_labels.masked_fill(attention_mask.reshape(input_ids.shape) == 0, -100)
            elif self.config.pad_token_id is not None:
                lm_labels = lm_labels.masked_fill(input_ids == self.config.pad_token_id, -100)
        hidden = hidden_states[..., :-1, :].reshape(-1, hidden_states.shape[-1])
        targets = lm_labels[..., 1:].reshape(-1, lm_labels.shape[-1] - 1)  # (sequences, seq - 1)
        keep = targets != -100  # project only the scored positions onto the vocabulary
        if _tracing():  # compiled: every position (static shapes), the same per-sequence means
            token_losses = lm_cross_entropy(_lm_head_logits(self, hidden), targets.reshape(-1)).view(targets.shape)
            counts = keep.sum(dim=1)
            scored = (counts > 0).to(token_losses.dtype)
            per_sequence = token_losses.sum(dim=1) / counts.clamp(min=1)
            return (per_sequence * scored).sum() / scored.sum().clamp(min=1)
        if not bool(keep.any()):
            return hidden_states.new_zeros(())
        token_losses = lm_cross_entropy(_lm_head_logits(self, hidden[keep.reshape(-1)]), targets[keep])
        # Mean per sequence, then over sequences, as the original train.py does: every sequence weighs the same
        # whatever its length, which also keeps gradient accumulation exact for micro-batches of unequal lengths.
        sequence = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[keep]
        per_sequence = token_losses.new_zeros(targets.shape[0]).index_add_(0, sequence, token_losses)
        counts = keep.sum(dim=1)
        scored = counts > 0
        return (per_sequence[scored] / counts[scored]).mean()

    def encode_extract_states(
        self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
    ):
        """Run the transformer; return its outputs, the final hidden states and h_l^m at each extract token."""
        check_model_kwargs(self, kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (batch, [choices or 2,] seq, E)
        if mc_token_ids is None:
            mc_token_ids = self.extract_positions(input_ids, attention_mask, hidden_states.shape[:-1], hidden_states.device)
        return outputs, hidden_states, self.gather_at(hidden_states, mc_token_ids)

    def classifier_output(
        self, outputs, hidden_states, logits, task_loss, input_ids, attention_mask, labels, lm_labels
    ) -> GPT1ClassifierOutput:
        """L3 = L2 + λ·L1 around the task logits; the auxiliary L1 is only computed when λ ≠ 0 and a loss is asked for."""
        lm_loss = (
            self.auxiliary_lm_loss(hidden_states, input_ids, attention_mask, lm_labels)
            if self.want_lm_loss(labels, lm_labels)
            else None
        )
        return GPT1ClassifierOutput(
            loss=self.combine_losses(task_loss, lm_loss),
            logits=logits,
            task_loss=task_loss,
            lm_loss=lm_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def combine_losses(self, task_loss, lm_loss):
        if task_loss is None:
            return None
        if lm_loss is None or self.config.lm_coef == 0:
            return task_loss
        return task_loss + self.config.lm_coef * lm_loss

    def want_lm_loss(self, labels, lm_labels) -> bool:
        return self.config.lm_coef != 0 and (labels is not None or lm_labels is not None)


class GPT1ForSequenceClassification(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Paper §3.3 classification, entailment and similarity: a linear layer on h_l^m at the extract token.

    - input_ids (batch, seq): classification / entailment; `num_labels == 1` gives regression (STS-B).
    - input_ids (batch, 2, seq): the *similarity* mode — both orderings of a sentence pair, whose extract
      states are summed before the classifier, as the paper does for MRPC/QQP/STS-B.
    loss = task_loss + lm_coef * lm_loss (L3 = L2 + λ·L1); both parts are returned too.
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # for the auxiliary L1
        self.clf_dropout = nn.Dropout(config.clf_pdrop)
        self.score = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        lm_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPT1ClassifierOutput:
        """mc_token_ids: extract-token index per sequence ((batch,) or (batch, 2)); found from the ids if omitted.
        labels: class ids (batch,), or float targets for regression. lm_labels: targets of the auxiliary LM loss
        (default: the input ids with padding masked)."""
        outputs, hidden_states, pooled = self.encode_extract_states(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
        )
        if pooled.dim() == 3:  # similarity: sum the representations of both orderings
            pooled = pooled.sum(dim=1)
        logits = self.score(self.clf_dropout(pooled))
        task_loss = self._task_loss(logits, labels) if labels is not None else None
        return self.classifier_output(outputs, hidden_states, logits, task_loss, input_ids, attention_mask, labels, lm_labels)

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
            self.config.problem_type = problem_type
        if problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(-1))
        if problem_type == "single_label_classification":
            if not _tracing() and labels.numel() and (int(labels.max()) >= self.num_labels or int(labels.min()) < 0):
                raise ValueError(
                    f"labels must be class ids in [0, {self.num_labels}) for this {self.num_labels}-way classifier, "
                    f"got values in [{int(labels.min())}, {int(labels.max())}]. Set num_labels (or id2label) to match "
                    f"the task's label set."
                )
            return F.cross_entropy(logits.float(), labels.reshape(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class GPT1ForMultipleChoice(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Paper §3.3 multiple choice (Story Cloze, RACE, SWAG): one `start context delim answer extract` sequence per
    answer, input (batch, choices, seq), each scored by a linear layer on its extract state, softmax over choices."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.clf_dropout = nn.Dropout(config.clf_pdrop)
        self.score = nn.Linear(config.n_embd, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        lm_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPT1ClassifierOutput:
        """input_ids (batch, choices, seq); mc_token_ids (batch, choices); labels (batch,) = index of the right choice."""
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if len(shape) != 3:
            raise ValueError(
                f"GPT1ForMultipleChoice expects input_ids of shape (batch, num_choices, seq_len), got {tuple(shape)}."
            )
        outputs, hidden_states, extract_states = self.encode_extract_states(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
        )  # hidden_states (batch, choices, seq, E)
        logits = self.score(self.clf_dropout(extract_states)).squeeze(-1)
        task_loss = None
        if labels is not None:
            if not _tracing() and labels.numel() and (int(labels.max()) >= shape[1] or int(labels.min()) < 0):
                raise ValueError(f"labels must be choice indices in [0, {shape[1]}), got {labels.tolist()}.")
            task_loss = F.cross_entropy(logits.float(), labels.reshape(-1))
        return self.classifier_output(outputs, hidden_states, logits, task_loss, input_ids, attention_mask, labels, lm_labels)


class GPT1MultipleChoiceHead(nn.Module):
    """`summary` projection named as in transformers' `OpenAIGPTSequenceSummary`, so its weights load as they are."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.first_dropout = nn.Dropout(config.clf_pdrop)
        self.summary = nn.Linear(config.n_embd, 1)

    def forward(self, extract_states: torch.Tensor) -> torch.Tensor:
        return self.summary(self.first_dropout(extract_states))


class GPT1DoubleHeadsModel(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Drop-in for `transformers.OpenAIGPTDoubleHeadsModel`: same arguments (`mc_token_ids`, `labels` for the LM,
    `mc_labels` for the choice) and outputs (`loss` = LM loss, `mc_loss`, `logits` = LM logits, `mc_logits`)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.multiple_choice_head = GPT1MultipleChoiceHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mc_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPT1DoubleHeadsModelOutput:
        check_model_kwargs(self, kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        lm_logits = _lm_head_logits(self, hidden_states)
        if mc_token_ids is None:  # as the reference: the last token of every sequence
            mc_token_ids = torch.full(hidden_states.shape[:-2], hidden_states.shape[-2] - 1, device=lm_logits.device)
        mc_logits = self.multiple_choice_head(self.gather_at(hidden_states, mc_token_ids)).squeeze(-1)
        mc_loss = F.cross_entropy(mc_logits.reshape(-1, mc_logits.shape[-1]), mc_labels.reshape(-1)) if mc_labels is not None else None
        lm_loss = None
        if labels is not None:
            shift_logits = lm_logits[..., :-1, :].reshape(-1, lm_logits.shape[-1])
            lm_loss = F.cross_entropy(shift_logits, labels[..., 1:].reshape(-1))
        return GPT1DoubleHeadsModelOutput(
            loss=lm_loss,
            mc_loss=mc_loss,
            logits=lm_logits,
            mc_logits=mc_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "GPT1PreTrainedModel",
    "GPT1Model",
    "GPT1ForCausalLM",
    "GPT1LMHeadModel",
    "GPT1ForSequenceClassification",
    "GPT1ForMultipleChoice",
    "GPT1DoubleHeadsModel",
    "GPT1ClassifierOutput",
    "GPT1DoubleHeadsModelOutput",
    "config_from_openai_gpt",
    "convert_openai_gpt_state_dict",
]
