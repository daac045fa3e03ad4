"""hf_gpt1.kernels: the compiled bf16 one-row product used by batch-1 decoding with bf16 weights."""

from __future__ import annotations

import pytest
import torch

from hf_gpt1 import kernels, modeling_gpt1
from hf_gpt1.modeling_gpt1 import GPT1ForCausalLM

from testing_utils import tiny_gpt1_config

AVX512_BF16 = torch.cpu._is_avx512_bf16_supported()
needs_avx512_bf16 = pytest.mark.skipif(not AVX512_BF16, reason="the kernel needs a CPU with AVX512-BF16")


@pytest.fixture(scope="module")
def kernel():
    op = kernels.bf16_addmv_kernel()
    # Where the CPU can run it, the kernel must build (compiler and ninja are in the dev set-up): no silent fallback.
    assert op is not None, kernels.unavailable_reason()
    return op


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
    assert kernels.bf16_addmv_kernel() is None
    assert kernels.unavailable_reason() == f"{kernels.ENV_VAR}=0"
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"HF_GPT1_CPU_KERNELS must be 1 .* or 0 .*; got 'fast'"):
        kernels.bf16_addmv_kernel()


def test_a_failed_build_falls_back_to_addmv_and_says_why(monkeypatch):
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setattr(kernels, "_unavailable_reason", {})
    monkeypatch.setattr(kernels, "_why_not_buildable", lambda: None)

    def failing_build():
        raise RuntimeError("Error building extension 'hf_gpt1_cpu_kernels': c++: fatal error")

    monkeypatch.setattr(kernels, "_build", failing_build)
    assert kernels.bf16_addmv_kernel() is None
    assert kernels.unavailable_reason().startswith("building it failed (RuntimeError: Error building extension")


def _bf16_model() -> GPT1ForCausalLM:
    torch.manual_seed(0)
    # Widths that exercise the kernel's tails (n_embd 80: 80 = 2*32 + 16; the MLP 320 = 2*128 + 2*32).
    return GPT1ForCausalLM(tiny_gpt1_config(n_embd=80, n_head=4)).to(torch.bfloat16).eval()


@needs_avx512_bf16
def test_batch_1_bf16_decoding_runs_on_the_kernel_and_matches_addmv(monkeypatch, kernel):
    model = _bf16_model()
    calls = []

    def counting_kernel(bias, weight, x):
        calls.append(tuple(weight.shape))
        return kernel(bias, weight, x)

    prompt = torch.randint(0, model.config.vocab_size, (1, 7))
    logits = {}
    for name, op in (("kernel", counting_kernel), ("addmv", False)):
        monkeypatch.setattr(modeling_gpt1, "_BF16_ADDMV", op)
        with torch.inference_mode():
            out = model.generate(
                prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None,
                output_logits=True, return_dict_in_generate=True,
            )
        logits[name] = torch.stack(out.logits)
        if name == "kernel":
            tokens = out.sequences
        else:
            assert torch.equal(out.sequences, tokens)
    # Prefill (7 rows) takes the matmul path except the LM head, which projects only the last row (logits_to_keep=1);
    # each of the 5 one-token steps takes 4 products per block + the LM head.
    lm_head = (model.config.vocab_size, model.config.n_embd)
    per_step = [(3 * 80, 80), (80, 80), (4 * 80, 80), (80, 4 * 80)] * model.config.n_layer + [lm_head]
    assert calls == [lm_head] + per_step * 5
    torch.testing.assert_close(logits["kernel"], logits["addmv"], rtol=2e-2, atol=2e-2)


def test_kernel_is_only_used_for_single_bf16_rows_without_autograd(monkeypatch):
    model = _bf16_model()
    calls = []
    monkeypatch.setattr(modeling_gpt1, "_BF16_ADDMV", lambda *args: calls.append(1))
    ids = torch.randint(0, model.config.vocab_size, (2, 1))
    with torch.no_grad():
        model(ids)  # batch 2: matmul
        model.float()(ids[:1])  # fp32: matmul
    model.to(torch.bfloat16)
    model(ids[:1])  # autograd on: the kernel has no backward
    assert calls == []
