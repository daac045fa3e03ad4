"""`gpt1_fused`: GPT-1's CPU training attention, registered with transformers' attention interface.

PyTorch's SDPA runs its fused kernel only without dropout; with the paper's attention dropout it falls back to a math
path that materialises every T×T intermediate and draws the mask with `bernoulli_` (one 53-bit double per element).
`gpt1_fused` is exactly `sdpa` except in that case and in bf16 CPU training without attention dropout, where the same
blockwise kernel beats SDPA's flash kernel. `enable_cpu_speedups(model)` selects it; `attn_implementation="gpt1_fused"`
works wherever this module has been imported (importing `hf_gpt1` does).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from ..modeling_gpt1 import eager_attention_forward
from ._runtime import tracing as _tracing

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
            grad_q, grad_k, grad_v = (
                torch.empty(batch, heads, n, head_dim, dtype=v.dtype) for n in (q_len, kv_len, kv_len)
            )
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
    """GPT-1's CPU training attention: `sdpa`, except for CPU training with attention dropout, where
    `_BlockwiseDropoutAttention` keeps the paper's dropout without SDPA's math fallback, and for CPU bf16 training
    without it, where the same blockwise path (saving its probabilities) beats SDPA's flash kernel by ~25% per layer
    (in fp32 they are even, so fp32 stays on SDPA). `output_attentions=True` runs eager: neither fused path forms the
    weights."""
    if kwargs.get("output_attentions"):
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    bf16_training = query.dtype == torch.bfloat16 and query.requires_grad and query.shape[2] > 1
    if (
        (dropout > 0.0 or bf16_training)
        and not _tracing()
        and query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype
    ):
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
