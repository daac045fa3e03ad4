"""Fast CPU subclasses of the plain modules of `modeling_gpt1`: same parameters, same state_dict keys, same maths.

`enable_cpu_speedups` (apply.py) swaps a model's modules for these in place (`module.__class__ = ...`); every one of
them runs its plain parent's forward wherever its fast path cannot run as the plain module would (another device,
autograd where it has no backward, hooks or PEFT/Accelerate wrappers, torch.compile/export).

- `GPT1Dropout`         dropout whose mask is drawn four elements per 64-bit draw and kept as one byte per element
- `GPT1Linear`          one bf16 row without autograd (batch-1 decoding): a product at memory speed
- `GPT1GELUTanh`        the paper's tanh-GELU on bf16 CPU activations on hf-gpt1's kernel
- `GPT1DecodeBlock`     one token of batch-1 decoding: q/k/v product, cache update, the rest of the block in one call
- `GPT1TokenEmbedding`, `GPT1TiedLMHead`
                        the tied token table in CPU training: reused table-sized buffers instead of fresh ones
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import GELUTanh
from transformers.cache_utils import Cache

from ..modeling_gpt1 import GPT1MLP, GPT1Attention, GPT1Block
from ._runtime import GLOBAL_HOOKS as _GLOBAL_HOOKS
from ._runtime import cpu_kernels as _cpu_kernels
from ._runtime import has_op as _has_op
from ._runtime import plain as _plain
from ._runtime import tracing as _tracing
from .attention import GPT1_ATTENTION, random_keep_mask

# ----------------------------------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------------------------------


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_states, p):
        keep = random_keep_mask(hidden_states.shape, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return torch.addcmul(
            hidden_states.new_zeros(()), hidden_states, keep, value=ctx.scale
        )  # one pass: x·keep/(1-p)

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


# ----------------------------------------------------------------------------------------------------------------------
# One-row bf16 products and the bf16 GELU
# ----------------------------------------------------------------------------------------------------------------------


def _one_row(linear: nn.Linear, hidden_states: torch.Tensor, kind: type) -> torch.Tensor | None:
    """`linear(hidden_states)` for a single bf16 row on CPU without autograd (batch-1 decoding with bf16 weights): a
    one-row product that streams the weight at memory speed, where oneDNN's one-row bf16 GEMM does not: hf-gpt1's
    compiled kernel (about 2x oneDNN's byte rate, docs/performance.md) or else torch's `addmv`. None where it does
    not apply (the plain module runs)."""
    if not (
        hidden_states.dtype == torch.bfloat16
        and hidden_states.numel() == hidden_states.shape[-1]
        and linear.weight.dtype == torch.bfloat16
        and hidden_states.device.type == "cpu"
        and not torch.is_grad_enabled()
        and _plain(linear, kind)
        and not _tracing()
    ):
        return None
    row = hidden_states.reshape(-1)
    kernels, bias = _cpu_kernels(), linear.bias
    if kernels and linear.weight.is_contiguous() and row.is_contiguous() and (bias is None or bias.is_contiguous()):
        out = kernels.bf16_addmv(bias, linear.weight, row)
    elif bias is None:
        out = torch.mv(linear.weight, row)
    else:
        out = torch.addmv(bias, linear.weight, row)
    return out.view(*hidden_states.shape[:-1], -1)


class GPT1Linear(nn.Linear):
    """`nn.Linear`; one bf16 row without autograd goes through `_one_row`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = _one_row(self, hidden_states, GPT1Linear)
        return super().forward(hidden_states) if out is None else out


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


class GPT1GELUTanh(GELUTanh):
    """The paper's tanh-GELU; on contiguous bf16 CPU activations (bf16 autocast training, bf16 inference) on hf-gpt1's
    compiled kernel where it can: torch's bf16 GELU is compute-bound on CPU, ~5x slower than the memory it touches
    (docs/performance.md)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if (
            hidden_states.dtype == torch.bfloat16
            and hidden_states.device.type == "cpu"
            and hidden_states.is_contiguous()
            and _plain(self, GPT1GELUTanh)
            and not _tracing()
            and _cpu_kernels()
        ):
            if torch.is_grad_enabled() and hidden_states.requires_grad:
                return _GeluTanhBF16.apply(hidden_states)
            return _cpu_kernels().gelu_tanh_bf16(hidden_states)  # no autograd: skip Function.apply's ~20 µs
        return super().forward(hidden_states)


# ----------------------------------------------------------------------------------------------------------------------
# The fused decode block
# ----------------------------------------------------------------------------------------------------------------------


class _DecodePlan:
    """What `_decode_plan` established about one block: its modules are exactly the plain kinds, in eval mode, unhooked,
    with contiguous CPU weights of one dtype (bf16 or fp32). Kept (per block, weakly) so that later tokens only
    re-check that none of it has changed, through the modules' own dicts: ~20 µs per block on this VM instead of ~90 µs
    of module attribute lookups."""

    def __init__(self, block: GPT1Block):
        attn, mlp = block.attn, block.mlp
        kinds = {"attn": GPT1Attention, "mlp": GPT1MLP, "ln_1": nn.LayerNorm, "ln_2": nn.LayerNorm, "c_attn": GPT1Linear,
                 "c_proj": GPT1Linear, "resid_dropout": GPT1Dropout, "c_fc": GPT1Linear, "act": GPT1GELUTanh,
                 "dropout": GPT1Dropout}  # fmt: skip
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
        self.params = tuple(
            (m._parameters, name, m._parameters.get(name)) for m in weighted for name in ("weight", "bias")
        )
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


def _attn_implementation(config) -> str | None:
    """`config._attn_implementation`, read where the property keeps it without PretrainedConfig's attribute-map lookup
    (~4 µs a read on this VM, 12 reads per token); the property itself if that attribute is not there."""
    try:
        return object.__getattribute__(config, "_attn_implementation_internal")
    except AttributeError:
        return config._attn_implementation


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


class GPT1DecodeBlock(GPT1Block):
    """`GPT1Block`; one token of batch-1 decoding (bf16 or fp32) runs as `_decode_block` where `_decode_plan` finds
    that it computes exactly what the modules would."""

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        plan = _decode_plan(self, hidden_states, attention_mask, kwargs)
        if plan is not None:  # one token of batch-1 decoding: the block in two calls around the cache update
            return _decode_block(plan, hidden_states, cache)
        return super().forward(hidden_states, attention_mask, cache, **kwargs)


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


class GPT1TokenEmbedding(nn.Embedding):
    """The token table's lookup (`tokens_embed`); in CPU training through `_TokenLookup`, whose `_TiedTable` (kept in
    `self.tied_table` for the LM head of this forward pass) lets it reuse its gradient tensor (see above). Leaving
    training lets go of the reused gradient."""

    tied_table: _TiedTable | None = None
    _lookup_gradient: _LookupGradient | None = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if _tracing():
            return super().forward(input_ids)
        self.tied_table = None
        if (
            _plain(self, GPT1TokenEmbedding)
            and self.weight.requires_grad
            and torch.is_grad_enabled()
            and self.weight.device.type == "cpu"
            and self.padding_idx is None
            and self.max_norm is None
            and not self.scale_grad_by_freq
            and not self.sparse
        ):
            if self._lookup_gradient is None:
                self._lookup_gradient = _LookupGradient()
            self.tied_table = _TiedTable(self._lookup_gradient)
            return _TokenLookup.apply(input_ids, self.weight, self.tied_table)
        return super().forward(input_ids)

    def train(self, mode: bool = True):
        if not mode:
            self._lookup_gradient = self.tied_table = None
        return super().train(mode)


class GPT1TiedLMHead(nn.Linear):
    """The LM head (`lm_head`, tied to `tokens_embed`); in CPU training through `_TiedLMHead` (see above), elsewhere
    `GPT1Linear`'s one-row product. `self.__dict__["tied_embedding"]` (set by `enable_cpu_speedups`, not a submodule:
    the state dict is unchanged) is the token lookup whose gradient it hands over. Leaving training lets go of the
    reused bf16 table copy and gradient (~250 MB for the released vocabulary), which inference never reads; a backward
    pass still pending keeps the ones its graph holds."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not (
            torch.is_grad_enabled()
            and _plain(self, GPT1TiedLMHead)
            and self.bias is None
            and self.weight.device.type == "cpu"
            and hidden_states.device.type == "cpu"
            and not _tracing()
        ):
            out = _one_row(self, hidden_states, GPT1TiedLMHead)
            return super().forward(hidden_states) if out is None else out
        embedding = self.__dict__.get("tied_embedding")
        tied = embedding.tied_table if embedding is not None and self.weight is embedding.weight else None
        if torch.is_autocast_enabled("cpu"):
            if torch.get_autocast_dtype("cpu") != torch.bfloat16 or self.weight.dtype != torch.float32:
                return super().forward(hidden_states)
            copies = self.__dict__.get("_bf16_table_copies")
            if copies is None:
                copies = self._bf16_table_copies = _BF16TableCopies()
            with torch.autocast("cpu", enabled=False):
                return _TiedLMHead.apply(hidden_states.to(torch.bfloat16), self.weight, copies, tied)
        if hidden_states.dtype != self.weight.dtype:
            return super().forward(hidden_states)
        return _TiedLMHead.apply(hidden_states, self.weight, None, tied)

    def train(self, mode: bool = True):
        if not mode:
            self.__dict__.pop("_bf16_table_copies", None)
        return super().train(mode)
