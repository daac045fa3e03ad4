"""hf_gpt1.kernels: the compiled bf16 CPU kernels (one-row product and fused block for batch-1 decoding, tanh-GELU,
LM loss) and their use by the fast modules of hf_gpt1.cpu_speed (swapped in by enable_cpu_speedups)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import types

import pytest
import torch
from transformers import DynamicCache

from hf_gpt1 import enable_cpu_speedups, kernels, modeling_gpt1
from hf_gpt1.cpu_speed import _runtime
from hf_gpt1.cpu_speed import loss as cpu_loss
from hf_gpt1.modeling_gpt1 import GPT1ForCausalLM
from testing_utils import tiny_gpt1_config

AVX512_BF16 = torch.cpu._is_avx512_bf16_supported()
needs_avx512_bf16 = pytest.mark.skipif(not AVX512_BF16, reason="the kernel needs a CPU with AVX512-BF16")


@pytest.fixture(scope="module")
def ops():
    namespace = kernels.load_cpu_kernels()
    # Where the CPU can run them, the kernels must build (compiler and ninja are in the dev set-up): no silent fallback.
    assert namespace is not None, kernels.unavailable_reason()
    return namespace


@pytest.fixture(scope="module")
def kernel(ops):
    return ops.bf16_addmv


def _expected(bias, weight, x):
    """fp32 accumulation, bias added in fp32, one rounding to bf16: what the kernel and oneDNN's GEMV compute."""
    out = weight.float() @ x.float()
    return (out if bias is None else out + bias.float()).to(torch.bfloat16)


@needs_avx512_bf16
@pytest.mark.parametrize("rows, width", [(1, 32), (5, 40), (17, 128), (64, 777), (768, 3072), (2304, 768), (301, 129)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bf16_addmv_matches_fp32_accumulation(kernel, rows, width, with_bias):
    """Widths cover the 128-wide main loop, the 32-wide loop and masked tails; row counts one thread's worth, odd
    counts and both threads."""
    torch.manual_seed(rows * 1000 + width)
    weight = (torch.randn(rows, width) * 0.05).to(torch.bfloat16)
    x = torch.randn(width).to(torch.bfloat16)
    bias = torch.randn(rows).to(torch.bfloat16) if with_bias else None
    got = kernel(bias, weight, x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows,)
    # Summation order differs from a plain fp32 matmul: allow one bf16 rounding step (2^-8 relative) plus fp32 noise.
    expected = _expected(bias, weight, x)
    scale = (weight.float().abs() @ x.float().abs()).max().item()
    torch.testing.assert_close(got.float(), expected.float(), rtol=2**-8, atol=scale * 1e-5)
    # No worse than torch's own bf16 product against the exact (fp64) answer.
    exact = weight.double() @ x.double() + (0 if bias is None else bias.double())
    reference = torch.mv(weight, x) if bias is None else torch.addmv(bias, weight, x)
    assert (got.double() - exact).abs().max() <= 2 * (reference.double() - exact).abs().max() + scale * 1e-5


@needs_avx512_bf16
def test_bf16_addmv_rejects_what_it_cannot_compute(kernel):
    weight, x = torch.randn(8, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="weight must be a contiguous 2-D bf16 CPU tensor"):
        kernel(None, weight.t(), x[:8])
    with pytest.raises(RuntimeError, match="weight must be a contiguous 2-D bf16 CPU tensor"):
        kernel(None, weight.float(), x)
    with pytest.raises(RuntimeError, match="x must be a contiguous bf16 CPU vector of length 64"):
        kernel(None, weight, x[:32])
    with pytest.raises(RuntimeError, match="bias must be a contiguous bf16 vector of length 8"):
        kernel(torch.zeros(9, dtype=torch.bfloat16), weight, x)


def test_the_environment_switch_and_its_errors(monkeypatch):
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setattr(kernels, "_unavailable_reason", {})
    monkeypatch.setenv(kernels.ENV_VAR, "0")
    assert kernels.load_cpu_kernels() is None
    assert kernels.unavailable_reason() == f"{kernels.ENV_VAR}=0"
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"HF_GPT1_CPU_KERNELS must be 1 .* or 0 .*; got 'fast'"):
        kernels.load_cpu_kernels()


def test_a_failed_build_falls_back_to_addmv_and_says_why(monkeypatch):
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setattr(kernels, "_unavailable_reason", {})
    monkeypatch.setattr(kernels, "_why_not_buildable", lambda: None)

    def failing_build():
        raise RuntimeError("Error building extension 'hf_gpt1_cpu_kernels': c++: fatal error")

    monkeypatch.setattr(kernels, "_build", failing_build)
    assert kernels.load_cpu_kernels() is None
    assert kernels.unavailable_reason().startswith("building them failed (RuntimeError: Error building extension")


def test_each_torch_release_builds_in_its_own_folder():
    names = {kernels.library_name(v) for v in ("2.13.0+cpu", "2.13.0", "2.14.1", "2.15.0", "2.15.0+cu130")}
    assert len(names) == 5 and all(name.isidentifier() for name in names)
    assert kernels.library_name() == kernels.library_name(torch.__version__)


@needs_avx512_bf16
@pytest.mark.slow
def test_a_build_is_not_stalled_by_the_lock_files_of_other_torch_releases(tmp_path):
    """torch >= 2.14 leaves a `lock` file in each build folder (an OS lock guards it); torch 2.13 waits for as long as
    one exists. A fresh `$TORCH_EXTENSIONS_DIR` holding what other releases left behind (and the folder that every
    release shared before) must still build and load this release's kernels, in a subprocess so the build is real."""
    others = [kernels.library_name(v) for v in ("2.13.0+cpu", "2.14.1", "2.15.0", "99.0.0")] + ["hf_gpt1_cpu_kernels"]
    for name in others:
        if name != kernels.library_name():
            (tmp_path / name).mkdir()
            (tmp_path / name / "lock").touch()
    script = "from hf_gpt1 import kernels; ops = kernels.load_cpu_kernels(); print(ops is not None, kernels.unavailable_reason())"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "HF_GPT1_CPU_KERNELS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0 and result.stdout.split()[0] == "True", result.stdout + result.stderr[-3000:]
    assert (tmp_path / kernels.library_name() / f"{kernels.library_name()}.so").is_file()


def _bf16_model() -> GPT1ForCausalLM:
    torch.manual_seed(0)
    # Widths that exercise the kernel's tails (n_embd 80: 80 = 2*32 + 16; the MLP 320 = 2*128 + 2*32).
    model = GPT1ForCausalLM(tiny_gpt1_config(n_embd=80, n_head=4)).to(torch.bfloat16).eval()
    return enable_cpu_speedups(model, attention=False)  # the speed paths; the attention stays the default (sdpa)


class _Counting:
    """Stands in for torch.ops.hf_gpt1 in the model: records each kernel call, then runs the real kernel."""

    def __init__(self, ops):
        self.ops, self.calls = ops, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, tuple(args[-1].shape) if name == "bf16_addmv" else None))
            return getattr(self.ops, name)(*args)

        return call


@needs_avx512_bf16
def test_batch_1_bf16_decoding_runs_on_the_kernels_and_matches_torchs_operators(monkeypatch, ops):
    model = _bf16_model()
    counting = _Counting(ops)
    prompt = torch.randint(0, model.config.vocab_size, (1, 7))
    logits = {}
    for name, namespace in (("kernel", counting), ("addmv", False)):
        monkeypatch.setattr(_runtime, "_CPU_KERNELS", namespace)
        with torch.inference_mode():
            out = model.generate(
                prompt,
                max_new_tokens=6,
                min_new_tokens=6,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
                output_logits=True,
                return_dict_in_generate=True,
            )
        logits[name] = torch.stack(out.logits)
        if name == "kernel":
            tokens = out.sequences
        else:
            assert torch.equal(out.sequences, tokens)
    # Prefill (7 rows) takes the matmul path except the LM head, which projects only the last row (logits_to_keep=1);
    # each of the 5 one-token steps takes, per block, the q/k/v product and the fused rest of the block, then the LM head.
    lm_head = [("bf16_addmv", (model.config.n_embd,))]
    gelu = [("gelu_tanh_bf16", None)]
    block = [("bf16_addmv", (80,)), ("decode_block", None)]
    assert counting.calls == gelu * model.config.n_layer + lm_head + (block * model.config.n_layer + lm_head) * 5
    torch.testing.assert_close(logits["kernel"], logits["addmv"], rtol=2e-2, atol=2e-2)


@needs_avx512_bf16
def test_one_row_kernel_is_only_used_for_single_bf16_rows_without_autograd(monkeypatch, ops):
    model = _bf16_model()
    counting = _Counting(ops)
    monkeypatch.setattr(_runtime, "_CPU_KERNELS", counting)
    ids = torch.randint(0, model.config.vocab_size, (2, 1))
    with torch.no_grad():
        model(ids)  # batch 2: matmul
    model(ids[:1])  # autograd on: the one-row kernel has no backward
    assert {name for name, _ in counting.calls} == {"gelu_tanh_bf16"}
    counting.calls.clear()
    with torch.no_grad():
        model.float()(ids[:1])  # fp32: torch's matmul and GELU; each block one fp32 call
    assert counting.calls == [("decode_block", None)] * model.config.n_layer


def _random_bf16_block(n_embd: int, n_head: int) -> modeling_gpt1.GPT1Block:
    torch.manual_seed(n_embd + n_head)
    block = modeling_gpt1.GPT1Block(tiny_gpt1_config(n_embd=n_embd, n_head=n_head), layer_idx=0)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(
                module, (torch.nn.Linear, torch.nn.LayerNorm)
            ):  # no zero biases or unit LayerNorms to hide in
                module.weight.copy_(
                    torch.randn_like(module.weight) * (0.3 if module.weight.dim() == 1 else 0.05)
                    + 1.0 * (module.weight.dim() == 1)
                )
                module.bias.copy_(torch.randn_like(module.bias) * 0.1)
    return block.to(torch.bfloat16).eval()


def _block_weights(block) -> tuple:
    """The block's parameters after its q/k/v product, in the order the decode-block kernels take them."""
    attn, mlp = block.attn, block.mlp
    return (attn.c_proj.weight, attn.c_proj.bias, block.ln_1.weight, block.ln_1.bias, mlp.c_fc.weight, mlp.c_fc.bias,
            mlp.c_proj.weight, mlp.c_proj.bias, block.ln_2.weight, block.ln_2.bias)  # fmt: skip


def _sdpa(scaling: float):
    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling)


def _block_tail(block, x, query, keys, values, attention):
    """The block after its q/k/v product, run by its modules: LN_2(h + mlp(h)), h = LN_1(x + c_proj(attention))."""
    attended = attention(query, keys, values).transpose(1, 2).reshape(1, 1, -1)
    hidden = block.ln_1(x + block.attn.c_proj(attended))
    return block.ln_2(hidden + block.mlp(hidden))


@needs_avx512_bf16
@pytest.mark.parametrize("n_embd, n_head, cached", [(80, 4, 1), (64, 4, 9), (96, 2, 33), (768, 12, 70)])
def test_decode_block_bf16_matches_the_blocks_modules(ops, n_embd, n_head, cached):
    """Head sizes 20, 16, 48, 64 (masked tails and whole vectors); the compiled block against the same block in fp64
    (the exact answer for these bf16 inputs) and against torch's bf16 operators (SDPA, Linear, LayerNorm, GELU)."""
    block = _random_bf16_block(n_embd, n_head)
    head_dim = n_embd // n_head
    x = torch.randn(1, 1, n_embd).to(torch.bfloat16)
    query = torch.randn(1, n_head, 1, head_dim).to(torch.bfloat16)
    keys, values = (torch.randn(1, n_head, cached, head_dim).to(torch.bfloat16) for _ in range(2))
    with torch.no_grad():
        got = ops.decode_block(x, query, keys, values, *_block_weights(block), block.attn.scaling, block.ln_1.eps)
        sdpa = _sdpa(block.attn.scaling)
        torch_ops = _block_tail(block, x, query, keys, values, sdpa)
        exact = _block_tail(copy.deepcopy(block).double(), *(t.double() for t in (x, query, keys, values)), sdpa)
    assert got.shape == x.shape and got.dtype == torch.bfloat16
    err, torch_err = (got.double() - exact).abs().max(), (torch_ops.double() - exact).abs().max()
    assert err <= 1.5 * torch_err + 1e-3, (err, torch_err)
    torch.testing.assert_close(got.float(), torch_ops.float(), rtol=0.03, atol=0.03)


@needs_avx512_bf16
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_block_rejects_what_it_cannot_compute(ops, dtype):
    """Both dtypes go through the same checks, each error naming the input and what was expected."""
    block = _random_bf16_block(32, 4).to(dtype)
    w = _block_weights(block)
    x, query = torch.randn(1, 1, 32, dtype=dtype), torch.randn(1, 4, 1, 8, dtype=dtype)
    keys = torch.randn(1, 4, 3, 8, dtype=dtype)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16

    def rejects(pattern: str, *args):
        with pytest.raises(RuntimeError, match=pattern):
            ops.decode_block(*args, 0.3, 1e-5)

    rejects("x must be bf16 or fp32, got Double", x.double(), query, keys, keys, *w)
    rejects(r"keys and values must be \(1, heads, cached, head_dim\)", x, query, keys[:, :2], keys[:, :2], *w)
    rejects("query must be a CPU tensor of x's dtype", x, query.to(other), keys, keys, *w)
    rejects("query must be one contiguous row of 32 values", x, query[:, :2], keys, keys, *w)
    rejects("values must be a CPU tensor of x's dtype", x, query, keys, keys.to(other), *w)
    rejects("no cached keys", x, query, keys[:, :, :0], keys[:, :, :0], *w)
    strided = keys.transpose(2, 3).contiguous().transpose(2, 3)  # positions contiguous, head_dim strided
    rejects("with head_dim contiguous", x, query, strided, strided, *w)
    swapped = (*w[:4], w[6], w[5], w[4], *w[7:])  # the MLP's two weights swapped
    first_layer = r"fc_weight \(the MLP's first layer, \(inner, n_embd\)\)"
    rejects(first_layer + r" must be a contiguous 32x32 matrix, got \[32, 128\]", x, query, keys, keys, *swapped)
    flat = (*w[:4], w[4].reshape(-1), *w[5:])
    not_2d = r"fc_weight \(the MLP's first layer\) must be an \(inner, 32\) matrix, got \[4096\]"
    rejects(not_2d, x, query, keys, keys, *flat)
    rejects(r"attn_proj_weight \(the attention's output projection\) must be a contiguous 32x32 matrix",
            x, query, keys, keys, w[0].t(), *w[1:])  # fmt: skip
    short_bias = (*w[:5], w[5][:100], *w[6:])
    rejects(r"fc_bias must be a contiguous vector of length 128, got \[100\]", x, query, keys, keys, *short_bias)
    rejects("ln_2_weight must be a CPU tensor of x's dtype", x, query, keys, keys, *w[:8], w[8].to(other), w[9])


@needs_avx512_bf16
def test_fp32_decoding_runs_each_block_in_one_call_with_the_modules_numbers(ops):
    """fp32 weights: the block after its q/k/v product is one call of ATen's operators from C++
    (`decode_block`); the same numbers as the modules (SDPA, Linear, LayerNorm, GELU) to fp32 rounding, also in
    `generate` (same tokens, same logits), and the modules under autocast."""
    block = _random_bf16_block(96, 2).float()
    x, query = torch.randn(1, 1, 96), torch.randn(1, 2, 1, 48)
    keys, values = torch.randn(1, 2, 33, 48), torch.randn(1, 2, 33, 48)
    with torch.no_grad():
        got = ops.decode_block(x, query, keys, values, *_block_weights(block), block.attn.scaling, block.ln_1.eps)
        expected = _block_tail(block, x, query, keys, values, _sdpa(block.attn.scaling))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    model = _bf16_model().float()
    prompt = torch.randint(0, model.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(0))
    outs = {}
    for name in ("fused", "modules"):
        saved = _runtime._CPU_KERNELS
        _runtime._CPU_KERNELS = ops if name == "fused" else False
        try:
            with torch.inference_mode():
                outs[name] = model.generate(
                    prompt,
                    max_new_tokens=6,
                    min_new_tokens=6,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
        finally:
            _runtime._CPU_KERNELS = saved
    assert torch.equal(outs["fused"].sequences, outs["modules"].sequences)
    torch.testing.assert_close(
        torch.stack(outs["fused"].logits), torch.stack(outs["modules"].logits), rtol=1e-5, atol=1e-5
    )
    with torch.no_grad():
        assert _decode_once(model, ops)[0] == ["decode_block"] * model.config.n_layer
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert "decode_block" not in _decode_once(model, ops)[0]


def _decode_once(model, ops, **kwargs):
    """Prefill 5 tokens, then one one-token step; the kernel calls of that step and its output."""
    counting = _Counting(ops)
    cache = DynamicCache(config=model.config)
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    saved, _runtime._CPU_KERNELS = _runtime._CPU_KERNELS, counting if ops else False
    try:
        model(ids[:, :5], cache=cache, use_cache=True)
        counting.calls.clear()
        out = model(ids[:, 5:], cache=cache, use_cache=True, **kwargs)
    finally:
        _runtime._CPU_KERNELS = saved
    return [name for name, _ in counting.calls], out


@needs_avx512_bf16
def test_fused_decode_block_runs_only_where_it_computes_what_the_modules_would(ops):
    model = _bf16_model()
    with torch.no_grad():
        calls, fused = _decode_once(model, ops, output_hidden_states=True)
        assert calls.count("decode_block") == model.config.n_layer
        # Each block's output, not only the last, matches the modules' (hidden states are recorded from the blocks).
        modules = _decode_once(model, False, output_hidden_states=True)[1]
        for a, b in zip(fused.hidden_states, modules.hidden_states, strict=True):
            torch.testing.assert_close(a.float(), b.float(), rtol=0.03, atol=0.03)

        # What the fused block would skip or get wrong: the modules run instead.
        assert "decode_block" not in _decode_once(model, ops, output_attentions=True)[0]
        model.train()
        assert "decode_block" not in _decode_once(model, ops)[0]  # dropout
        model.eval()
        seen = []
        handle = model.transformer.h[1].mlp.c_fc.register_forward_hook(lambda *args: seen.append(1))
        calls = _decode_once(model, ops)[0]
        handle.remove()
        assert seen and calls.count("decode_block") == model.config.n_layer - 1  # only the hooked block unfused
        eager = _bf16_model()
        eager.set_attn_implementation("eager")  # a named implementation is what runs
        assert "decode_block" not in _decode_once(eager, ops)[0]
    assert "decode_block" not in _decode_once(model, ops)[0]  # autograd on

    # Changes after blocks have decoded (their plans are cached): each is noticed.
    from accelerate.hooks import ModelHook, add_hook_to_module
    from peft import LoraConfig, get_peft_model

    with torch.no_grad():
        assert _decode_once(model, ops)[0].count("decode_block") == model.config.n_layer
        # Accelerate's hooks (device offloading) replace a module's forward: neither the block nor the layer's
        # one-row product may bypass it.
        add_hook_to_module(model.transformer.h[0].mlp.c_fc, ModelHook())
        calls = _decode_once(model, ops)[0]
        assert calls.count("decode_block") == 1 and calls.count("bf16_addmv") == 1 + 3 + 1  # block 1; block 0's
        model.transformer.h[1].ln_2.float()  # fp32 LayerNorm parameters (torch mixes them with bf16 inputs)
        assert "decode_block" not in _decode_once(model, ops)[0]
        model.transformer.h[1].ln_2.bfloat16()
        assert _decode_once(model, ops)[0].count("decode_block") == 1
        lora = get_peft_model(model, LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
        assert "decode_block" not in _decode_once(lora, ops)[0]  # the adapter's update must be applied


@needs_avx512_bf16
def test_decoding_with_an_older_package_without_the_block_kernel(monkeypatch, ops):
    """A kernels namespace without `decode_block` (an older build): the block's modules run, with the other kernels."""
    model = _bf16_model()
    older = types.SimpleNamespace(bf16_addmv=ops.bf16_addmv, gelu_tanh_bf16=ops.gelu_tanh_bf16)
    monkeypatch.setattr(_runtime, "_OPS_PRESENT", {})
    with torch.no_grad():
        expected = _decode_once(model, False)[1].logits
        monkeypatch.setattr(_runtime, "_CPU_KERNELS", older)
        cache = DynamicCache(config=model.config)
        ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
        model(ids[:, :5], cache=cache, use_cache=True)
        got = model(ids[:, 5:], cache=cache, use_cache=True).logits
    assert _runtime._OPS_PRESENT == {"decode_block": False}
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.03, atol=0.03)


def _gelu_reference(x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tanh-GELU and its input gradient computed in fp64, rounded once to bf16: the correctly rounded answers."""
    x64 = x.double().requires_grad_()
    out = torch.nn.functional.gelu(x64, approximate="tanh")
    out.backward(grad.double())
    return out.detach().to(torch.bfloat16), x64.grad.to(torch.bfloat16)


def _bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in bf16 units in the last place (bit patterns mapped to a monotonic integer line)."""
    a, b = (t.view(torch.int16).int() for t in (a, b))
    a, b = (torch.where(t < 0, -(t & 0x7FFF), t) for t in (a, b))
    return (a - b).abs()


@needs_avx512_bf16
@pytest.mark.parametrize("numel", [1, 15, 16, 17, 1000, 3 * (1 << 14) + 5])  # masked tails, several threads' worth
def test_gelu_tanh_bf16_matches_the_correctly_rounded_answer(ops, numel):
    torch.manual_seed(numel)
    x = (torch.randn(numel) * 3).to(torch.bfloat16)
    x[: min(numel, 6)] = torch.tensor([0.0, -0.0, 1e-3, -1e-3, 12.0, -12.0])[: min(numel, 6)].to(torch.bfloat16)
    grad = torch.randn(numel).to(torch.bfloat16)
    expected, expected_grad = _gelu_reference(x, grad)
    out, out_grad = ops.gelu_tanh_bf16(x), ops.gelu_tanh_bf16_backward(grad, x)
    assert out.dtype == out_grad.dtype == torch.bfloat16 and out.shape == out_grad.shape == x.shape
    for got, want in ((out, expected), (out_grad, expected_grad)):
        significant = want.float().abs() > 1e-6  # below that, ulps of tiny numbers say nothing (exp's tail: ~1e-16)
        assert (_bf16_ulps(got, want)[significant] <= 1).all()
        torch.testing.assert_close(got[~significant].float(), want[~significant].float(), atol=1e-6, rtol=0)


@needs_avx512_bf16
def test_gelu_tanh_bf16_is_as_accurate_as_torchs_gelu(ops):
    """Not a regression against torch's bf16 GELU: at least as often correctly rounded (torch's vectorised tanh is
    off by one bf16 ulp on ~7% of inputs, this kernel on ~1%)."""
    torch.manual_seed(0)
    x, grad = (torch.randn(1 << 16) * 3).to(torch.bfloat16), torch.randn(1 << 16).to(torch.bfloat16)
    expected, expected_grad = _gelu_reference(x, grad)
    ours_wrong = (ops.gelu_tanh_bf16(x) != expected).float().mean()
    torch_wrong = (torch.nn.functional.gelu(x, approximate="tanh") != expected).float().mean()
    assert ours_wrong <= torch_wrong
    ours_grad_wrong = (ops.gelu_tanh_bf16_backward(grad, x) != expected_grad).float().mean()
    torch_grad_wrong = (torch.ops.aten.gelu_backward(grad, x, approximate="tanh") != expected_grad).float().mean()
    assert ours_grad_wrong <= torch_grad_wrong


@needs_avx512_bf16
def test_gelu_tanh_bf16_rejects_what_it_cannot_compute(ops):
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="x must be a contiguous bf16 CPU tensor"):
        ops.gelu_tanh_bf16(x.t())
    with pytest.raises(RuntimeError, match="x must be a contiguous bf16 CPU tensor"):
        ops.gelu_tanh_bf16(x.float())
    with pytest.raises(RuntimeError, match=r"grad \[4, 5\] and x \[4, 6\] must have the same shape"):
        ops.gelu_tanh_bf16_backward(x[:, :5].contiguous(), x)


@needs_avx512_bf16
def test_bf16_autocast_training_runs_gelu_on_the_kernel_with_torchs_gradients(monkeypatch, ops):
    """The MLP's GELU under bf16 autocast: forward and backward on the kernel, loss and gradients as with torch's GELU
    (bf16 tolerance: the kernel rounds differently on ~1% of activations), also with gradient checkpointing."""
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_gpt1_config(n_embd=80, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    enable_cpu_speedups(model, attention=False)
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    results = {}
    for name, namespace in (("kernel", _Counting(ops)), ("torch", False), ("kernel, checkpointed", _Counting(ops))):
        monkeypatch.setattr(_runtime, "_CPU_KERNELS", namespace)
        if name == "kernel, checkpointed":
            model.activation_checkpointing_enable()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
        if namespace:
            names = [call for call, _ in namespace.calls]
            forwards = 2 if "checkpointed" in name else 1  # checkpointing replays each block's forward
            assert names.count("gelu_tanh_bf16") == forwards * model.config.n_layer
            assert names.count("gelu_tanh_bf16_backward") == model.config.n_layer
    for name in ("kernel", "kernel, checkpointed"):
        loss, grads = results[name]
        torch.testing.assert_close(loss, results["torch"][0], rtol=1e-2, atol=1e-2)
        for got, want in zip(grads, results["torch"][1]):
            torch.testing.assert_close(got, want, rtol=5e-2, atol=2e-3)


@needs_avx512_bf16
@pytest.mark.parametrize("vocab", [1, 15, 16, 17, 33, 40478])  # masked tails, the 32-wide loop, GPT-1's vocabulary
def test_cross_entropy_bf16_matches_fp64(ops, vocab):
    torch.manual_seed(vocab)
    logits = (torch.randn(5, vocab) * 4).to(torch.bfloat16)
    logits[1] += 300  # large logits: the row maximum is subtracted before exp
    targets = torch.randint(0, vocab, (5,))
    scale = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0])  # 0: an ignored row gets no gradient
    lse, picked = ops.cross_entropy_bf16(logits, targets)
    exact = logits.double()
    torch.testing.assert_close(lse.double(), torch.logsumexp(exact, -1), rtol=1e-6, atol=1e-6)
    assert torch.equal(picked, logits.float().gather(1, targets[:, None]).squeeze(1))
    grad = ops.cross_entropy_bf16_backward(logits, targets, lse, scale)
    expected = (torch.softmax(exact, -1) - torch.nn.functional.one_hot(targets, vocab)) * scale.double()[:, None]
    assert grad.dtype == torch.bfloat16 and not grad[2].any()
    significant = expected.abs() > 1e-30
    assert (_bf16_ulps(grad, expected.to(torch.bfloat16))[significant] <= 1).all()


@needs_avx512_bf16
def test_cross_entropy_bf16_rejects_what_it_cannot_compute(ops):
    logits, targets = torch.randn(3, 10, dtype=torch.bfloat16), torch.tensor([0, 9, 3])
    with pytest.raises(RuntimeError, match=r"logits must be a contiguous 2-D \(rows, vocab\) bf16 CPU tensor"):
        ops.cross_entropy_bf16(logits.float(), targets)
    with pytest.raises(RuntimeError, match="targets must be a contiguous int64 vector of length 3"):
        ops.cross_entropy_bf16(logits, targets[:2])
    with pytest.raises(RuntimeError, match=r"targets must lie in \[0, 10\), got \[0, 10\]"):
        ops.cross_entropy_bf16(logits, torch.tensor([0, 10, 3]))


@needs_avx512_bf16
def test_lm_loss_on_bf16_logits_runs_on_the_kernel_and_matches_the_chunked_path(monkeypatch, ops):
    torch.manual_seed(0)
    logits = (torch.randn(3, 11, 97) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 97, (3, 11))
    labels[0, :4] = -100
    labels[2] = -100
    results = {}
    for name, namespace in (("kernel", _Counting(ops)), ("chunked", False)):
        monkeypatch.setattr(_runtime, "_CPU_KERNELS", namespace)
        leaf = logits.clone().requires_grad_()
        loss = cpu_loss.causal_lm_loss(leaf, labels)
        loss.backward()
        results[name] = (loss.detach(), leaf.grad)
        if namespace:
            assert [call for call, _ in namespace.calls] == ["cross_entropy_bf16", "cross_entropy_bf16_backward"]
    torch.testing.assert_close(results["kernel"][0], results["chunked"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results["kernel"][1], results["chunked"][1], rtol=1e-2, atol=1e-5)
    assert not results["kernel"][1][2].any() and not results["kernel"][1][0, :3].any()
