"""The language-modelling loss over the 40k-token vocabulary, chunked (and on bf16 logits, hf-gpt1's kernel).

`causal_lm_loss` is what `enable_cpu_speedups` sets as `model.loss_function` (transformers' `ForCausalLMLoss`
semantics), `lm_cross_entropy` what it sets as the fine-tuning heads' per-token loss (`token_lm_losses`, the
auxiliary L1).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ._runtime import cpu_kernels as _cpu_kernels
from ._runtime import tracing as _tracing

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
        return (
            token_losses.sum() / (shift_labels != ignore_index).sum()
        )  # 0/0 = nan with no scored token, as F.cross_entropy
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(token_losses.device)
    return token_losses.sum() / num_items_in_batch
