"""Numerics of GPT-1's fast attention/dropout path (`gpt1_fused`, what the training scripts select; a plain
`from_pretrained` gets transformers' default, `sdpa`).

- without dropout it is sdpa, and equal to eager (outputs and gradients); bf16 CPU training without attention dropout
  runs the blockwise attention with p = 0 instead, equal to eager within bf16 tolerance;
- with dropout, the blockwise attention equals eager attention *given the same dropout mask* (outputs and gradients),
  for causal, padded and cached (q_len < kv_len) inputs, fp64/fp32, and bf16 autocast within bf16 tolerance;
- its masks, and `GPT1Dropout`'s, keep with probability 1-p (exactly round(p·2¹⁶)/2¹⁶ dropped, |error| ≤ 2⁻¹⁷), with
  independent draws across positions, heads, batch rows and steps (checked statistically);
- gradient checkpointing replays the same masks (same gradients with and without it).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from hf_gpt1 import GPT1Config, GPT1ForCausalLM
from hf_gpt1.cpu_speed import attention as mg
from hf_gpt1.cpu_speed.modules import GPT1Dropout
from testing_utils import TINY, no_dropout

SIGMAS = 6.0  # statistical checks: fail only beyond 6 standard deviations (false alarm ~1e-9 per check)
MIN_P_VALUE = 1e-6


def _attention(query, key, value, mask, p, block, scaling=0.125, save_probs=False):
    return mg._BlockwiseDropoutAttention.apply(query, key, value, mask, p, scaling, block, None, save_probs)


def _kept(query, key, mask, p, block, seed, scaling=0.125):
    """The keep mask (batch, heads, q, kv) the blockwise attention draws with this seed, read through v = identity."""
    batch, heads, _, head_dim = query.shape
    kv_len = key.shape[2]
    assert kv_len <= head_dim
    eye = torch.eye(kv_len, head_dim, dtype=query.dtype).expand(batch, heads, kv_len, head_dim)
    torch.manual_seed(seed)
    with torch.no_grad():
        probe = _attention(query, key, eye, mask, p, block, scaling)  # (batch, q, heads, head_dim)
    return probe.transpose(1, 2)[..., :kv_len] != 0


def _eager(query, key, value, mask, keep, p, scaling=0.125):
    """Eager attention with a given keep mask; mask: None (causal, queries at the end of the keys) or bool 4D."""
    q_len, kv_len = query.shape[2], key.shape[2]
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if mask is None:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32 if scores.dtype != torch.float64 else None).to(value.dtype)
    probs = probs * keep / (1 - p)
    return torch.matmul(probs, value).transpose(1, 2)


def _padding_mask(batch, q_len, kv_len, pad_rows):
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)[None, None].repeat(batch, 1, 1, 1)
    for row, pad in pad_rows.items():  # left padding: the first `pad` keys are padding
        allowed[row, :, :, :pad] = False
    return allowed


# ----------------------------------------------------------------------------------------------------------------------
# Exactness of the attention given the mask
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("case", ["causal", "padded", "cached", "cached_padded"])
@pytest.mark.parametrize("block", [7, 16, 64])
@pytest.mark.parametrize("p", [0.3, 0.0])  # p = 0: no masks
@pytest.mark.parametrize("save_probs", [False, True])  # backward recomputes the probabilities, or reads saved ones
def test_blockwise_dropout_attention_equals_eager_with_the_same_mask(dtype, atol, case, block, p, save_probs):
    torch.manual_seed(0)
    batch, heads, head_dim = 2, 3, 64
    kv_len = 40
    q_len = kv_len if case in ("causal", "padded") else 13
    query = torch.randn(batch, heads, q_len, head_dim, dtype=dtype, requires_grad=True)
    key, value = (torch.randn(batch, heads, kv_len, head_dim, dtype=dtype, requires_grad=True) for _ in range(2))
    mask = _padding_mask(batch, q_len, kv_len, {1: 9}) if "padded" in case else None
    if p > 0:
        keep = _kept(query.detach(), key.detach(), mask, p, block, seed=11)
    else:
        keep = torch.ones(batch, heads, q_len, kv_len, dtype=torch.bool)

    torch.manual_seed(11)
    out = _attention(query, key, value, mask, p, block, save_probs=save_probs)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (query, key, value), grad)
    ref = _eager(query, key, value, mask, keep, p)
    ref_grads = torch.autograd.grad(ref, (query, key, value), grad)
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    for name, got, want in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=f"grad {name}")


@pytest.mark.parametrize("save_probs", [False, True])
def test_blockwise_attention_under_bf16_autocast_matches_eager_within_bf16_tolerance(save_probs):
    torch.manual_seed(0)
    batch, heads, seq, head_dim, p = 2, 4, 48, 64, 0.1
    q, k, v = (torch.randn(batch, heads, seq, head_dim).to(torch.bfloat16).requires_grad_() for _ in range(3))
    keep = _kept(q.detach().double(), k.detach().double(), None, p, 16, seed=3)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _attention(q, k, v, None, p, 16, save_probs=save_probs)
    assert out.dtype == torch.bfloat16
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = _eager(q64, k64, v64, None, keep, p)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad.double())
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0.02)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, atol=0.1, rtol=0.05)


def _models(**config):
    torch.manual_seed(0)
    default = GPT1ForCausalLM(GPT1Config(**{**TINY, **config}))
    default.set_attn_implementation(mg.GPT1_ATTENTION)
    eager = GPT1ForCausalLM(GPT1Config(**{**TINY, **config}))
    eager.load_state_dict(default.state_dict())
    eager.set_attn_implementation("eager")
    return default, eager


def test_default_implementation_is_sdpa_and_gpt1_fused_eager_stay_selectable(tmp_path):
    model = GPT1ForCausalLM(GPT1Config(**TINY))
    assert model.config._attn_implementation == "sdpa"  # transformers' contract for a model that supports sdpa
    model.set_attn_implementation(mg.GPT1_ATTENTION)
    model.save_pretrained(tmp_path)  # the runtime choice is not written into config.json
    for choice in ("eager", "sdpa", mg.GPT1_ATTENTION):
        assert (
            GPT1ForCausalLM.from_pretrained(tmp_path, attn_implementation=choice).config._attn_implementation == choice
        )
    assert GPT1ForCausalLM.from_pretrained(tmp_path).config._attn_implementation == "sdpa"


@pytest.mark.parametrize("padding", [False, True])
def test_without_dropout_default_equals_eager_outputs_and_gradients(padding):
    default, eager = _models(**no_dropout())
    default.train(), eager.train()
    ids = torch.randint(0, TINY["vocab_size"], (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    if padding:  # right padding: every query sees a key (a query seeing none is undefined and differs by backend)
        mask[1, 14:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    outs = []
    for model in (default, eager):
        out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        outs.append((out.logits, {n: p.grad for n, p in model.named_parameters()}))
    valid = mask.bool()
    torch.testing.assert_close(outs[0][0][valid], outs[1][0][valid], atol=1e-5, rtol=0)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(grad, outs[1][1][name], atol=1e-5, rtol=1e-4, msg=name)


def _count_blockwise_calls(monkeypatch) -> list:
    calls = []
    apply = mg._BlockwiseDropoutAttention.apply

    def spy(*args):  # records (p, whether the packed q/k/v tensor was handed over, save_probs)
        calls.append((args[4], args[7] is not None, args[8]))
        return apply(*args)

    monkeypatch.setattr(mg._BlockwiseDropoutAttention, "apply", spy)
    return calls


@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("save_probs", [False, True])
def test_packed_qkv_gradient_equals_separate_gradients(p, save_probs):
    """Given the packed (batch, seq, 3, heads, head_dim) tensor q/k/v are slices of, the blockwise attention writes
    one gradient in that layout; it equals what autograd assembles from three separate gradients, bit for bit."""
    batch, seq, heads, head_dim = 2, 40, 3, 8
    grads = []
    for packed_path in (False, True):
        torch.manual_seed(0)
        fused = torch.randn(batch * seq, 3 * heads * head_dim, dtype=torch.float64, requires_grad=True)
        qkv = (fused * 1).view(batch, seq, 3, heads, head_dim)  # as c_attn's output: a view of a matmul result
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        packed = mg._packed_qkv(query, key, value)
        assert packed is not None and packed.data_ptr() == qkv.data_ptr() and packed.shape == qkv.shape
        torch.manual_seed(1)  # the same dropout masks on both paths
        packed_arg = packed if packed_path else None
        out = mg._BlockwiseDropoutAttention.apply(query, key, value, None, p, 0.3, 16, packed_arg, save_probs)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape))
        grads.append(fused.grad)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_saved_probabilities_give_the_same_bits_as_recomputed_ones(dtype, p):
    """Saving each block's probabilities only skips recomputing them in backward: outputs and gradients are
    bit-identical to the recomputing path (same masks, same block size)."""
    results = []
    for save_probs in (False, True):
        torch.manual_seed(0)
        q, k, v = (torch.randn(2, 3, 50, 16, dtype=dtype, requires_grad=True) for _ in range(3))
        torch.manual_seed(1)
        out = _attention(q, k, v, None, p, 16, save_probs=save_probs)
        grads = torch.autograd.grad(out, (q, k, v), torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape))
        results.append((out, *grads))
    for got, want in zip(*results):
        assert torch.equal(got, want)


def test_packed_qkv_only_for_the_three_slices_of_one_tensor():
    qkv = torch.randn(2, 5, 3, 4, 8).view(2, 5, 3 * 4 * 8).view(2, 5, 3, 4, 8)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    assert mg._packed_qkv(query, key, value) is not None
    cached_key = torch.cat([torch.randn(2, 4, 3, 8), key], dim=2)  # keys from a KV cache: not slices of qkv
    cached_value = torch.cat([torch.randn(2, 4, 3, 8), value], dim=2)
    assert mg._packed_qkv(query, cached_key, cached_value) is None
    assert mg._packed_qkv(query, value, key) is None  # slices of it, but not in q, k, v order
    assert mg._packed_qkv(query.clone(), key, value) is None
    assert mg._packed_qkv(*torch.randn(3, 2, 4, 5, 8).unbind(0)) is None  # one stacked tensor, but not c_attn's layout


@pytest.mark.parametrize("padding", [False, True])
def test_bf16_training_without_attention_dropout_uses_blockwise_path_and_matches_eager(monkeypatch, padding):
    """bf16 autocast training with attn_pdrop=0 runs `_BlockwiseDropoutAttention` with p = 0 (faster than SDPA's CPU
    flash kernel there) and agrees with eager attention within bf16 tolerance, in logits and every gradient."""
    calls = _count_blockwise_calls(monkeypatch)
    default, eager = _models(**no_dropout())
    default.train(), eager.train()
    ids = torch.randint(0, TINY["vocab_size"], (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 20, dtype=torch.long)
    if padding:
        mask[1, 14:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    outs = []
    for model in (default, eager):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        outs.append((out.logits.float(), {n: p.grad for n, p in model.named_parameters()}))
    # the default model's layers, and only those, with packed q/k/v, saving their probabilities
    assert calls == [(0.0, True, True)] * TINY["n_layer"]
    valid = mask.bool()
    torch.testing.assert_close(outs[0][0][valid], outs[1][0][valid], atol=0.05, rtol=0.02)
    for name, grad in outs[0][1].items():
        scale = outs[1][1][name].abs().max().item()
        torch.testing.assert_close(grad, outs[1][1][name], atol=0.03 * scale + 1e-3, rtol=0.05, msg=name)


def test_training_with_attention_dropout_saves_probabilities_only_in_bf16(monkeypatch):
    """With the paper's attention dropout, bf16 autocast training keeps each block's probabilities for backward
    (2 bytes per score), fp32 training recomputes them (4 bytes per score would cost more memory than it saves time)."""
    calls = _count_blockwise_calls(monkeypatch)
    default, _ = _models(attn_pdrop=0.1)
    default.train()
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    default(ids, labels=ids).loss.backward()
    assert calls == [(0.1, True, False)] * TINY["n_layer"]
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = default(ids, labels=ids).loss
    loss.backward()
    assert calls == [(0.1, True, True)] * TINY["n_layer"]


def test_fp32_training_and_bf16_inference_without_attention_dropout_stay_on_sdpa(monkeypatch):
    calls = _count_blockwise_calls(monkeypatch)
    default, _ = _models(**no_dropout())
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    default.train()(ids, labels=ids).loss.backward()  # fp32: SDPA's flash kernel is as fast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        default(ids)  # no backward: SDPA
    default.to(torch.bfloat16).eval()
    with torch.no_grad():
        default(ids)
    assert calls == []


def test_output_attentions_still_returns_weights():
    model = GPT1ForCausalLM(GPT1Config(**TINY)).eval()
    out = model(torch.randint(0, TINY["vocab_size"], (2, 9)), output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == TINY["n_layer"]
    assert out.attentions[0].shape == (2, TINY["n_head"], 9, 9)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, TINY["n_head"], 9))


@pytest.mark.parametrize("bf16", [False, True])  # bf16 autocast: the blockwise attention also saves probabilities
def test_gradient_checkpointing_replays_the_same_dropout_masks(bf16):
    torch.manual_seed(0)
    config = GPT1Config(**TINY)  # the paper's dropout everywhere
    config._attn_implementation = mg.GPT1_ATTENTION
    plain = GPT1ForCausalLM(config).train()
    ckpt = GPT1ForCausalLM(config).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing_enable()
    ids = torch.randint(0, TINY["vocab_size"], (2, 24))
    losses = []
    for model in (plain, ckpt):
        torch.manual_seed(123)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------------------------------
# Statistics of the masks
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.01])
def test_drop_probability_is_exact_to_2_to_the_minus_16(p):
    exact = round(p * 65536) / 65536  # the drop probability the 16-bit threshold implements
    assert abs(exact - p) <= 2**-17
    n = 1 << 22
    rate = 1 - mg.random_keep_mask((n,), p).float().mean().item()
    assert abs(rate - exact) <= SIGMAS * math.sqrt(exact * (1 - exact) / n)


def test_sixteen_bit_fields_are_uniform():
    torch.manual_seed(0)
    words = torch.empty(1 << 20, dtype=torch.int64).random_(-(2**63), None)
    fields = words.view(torch.int16).long() + 2**15  # [0, 65536)
    for part in (fields >> 8, fields & 255, fields.view(-1, 4)[:, 3] >> 8):  # high/low bytes; the sign-carrying field
        counts = torch.bincount(part.reshape(-1), minlength=256).double()
        assert stats.chisquare(counts.numpy()).pvalue > MIN_P_VALUE


def _independence_p_value(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).long(), b.reshape(-1).long()
    table = torch.bincount(a * 2 + b, minlength=4).reshape(2, 2).numpy()
    return stats.chi2_contingency(table, correction=False).pvalue


def test_drop_masks_are_independent_across_positions_and_calls():
    torch.manual_seed(1)
    p = 0.1
    mask = mg.random_keep_mask((1 << 21,), p) == 0  # dropped
    for lag in (1, 2, 3, 4, 5, 64):  # neighbours in the same 64-bit word, across words, far apart
        assert _independence_p_value(mask[:-lag], mask[lag:]) > MIN_P_VALUE, lag
    for lane in range(4):  # each 16-bit field of the word keeps the same rate
        lane_mask = mask.view(-1, 4)[:, lane]
        assert abs(lane_mask.float().mean().item() - p) <= SIGMAS * math.sqrt(p * (1 - p) / lane_mask.numel())
    again = mg.random_keep_mask((1 << 21,), p) == 0
    assert not torch.equal(mask, again)
    assert _independence_p_value(mask, again) > MIN_P_VALUE


def test_attention_dropout_keep_rate_and_independence_across_heads_positions_steps():
    torch.manual_seed(0)
    batch, heads, seq, head_dim, p, block = 4, 6, 64, 64, 0.1, 16
    q, k = torch.randn(batch, heads, seq, head_dim), torch.randn(batch, heads, seq, head_dim)
    first = _kept(q, k, None, p, block, seed=5)
    second = _kept(q, k, None, p, block, seed=6)  # the next training step draws anew
    assert torch.equal(first, _kept(q, k, None, p, block, seed=5))  # a mask is a function of the RNG state only
    visible = torch.ones(seq, seq, dtype=torch.bool).tril().expand_as(first)
    assert not first[~visible].any()  # nothing beyond the causal frontier is ever attended
    kept = first[visible].float()
    exact_keep = 1 - round(p * 65536) / 65536
    assert abs(kept.mean().item() - exact_keep) <= SIGMAS * math.sqrt(p * (1 - p) / kept.numel())
    pairs = {
        "heads": (first[:, 0][visible[:, 0]], first[:, 1][visible[:, 1]]),
        "batch rows": (first[0][visible[0]], first[1][visible[1]]),
        "query positions": (first[:, :, 1:, :1], first[:, :, :-1, :1]),
        "key positions": (first[:, :, -1, :-1], first[:, :, -1, 1:]),
        "steps": (first[visible], second[visible]),
    }
    for name, (a, b) in pairs.items():
        assert _independence_p_value(a, b) > MIN_P_VALUE, name


def test_gpt1_dropout_semantics():
    layer = GPT1Dropout(0.1).train()
    x = torch.randn(512, 1024, requires_grad=True)
    torch.manual_seed(0)
    out = layer(x)
    dropped = out == 0
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.9)
    n = dropped.numel()
    assert abs(dropped.float().mean().item() - 0.1) <= SIGMAS * math.sqrt(0.09 / n)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    torch.testing.assert_close(grad, (~dropped).float() / 0.9)
    torch.manual_seed(0)
    torch.testing.assert_close(layer(x), out)  # same RNG state, same mask
    assert torch.equal(layer.eval()(x), x)
    assert isinstance(layer, torch.nn.Dropout)
