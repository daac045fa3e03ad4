"""Cached generation equals a full forward pass, step by step, on *scores* (not only tokens).

transformers 5.24 started handing the KV cache to the model as `cache=`; a model that still read `past_key_values`
built a fresh cache at every step, so each step attended only to itself. With the default 0.02 init a tiny random
model's greedy tokens mostly survive that bug, so every check here uses a wide init and compares the logits of every
generated step with the logits a full, uncached forward pass gives at the same position, for greedy, sampling, beam
search, a left-padded batch, `return_dict_in_generate` outputs, a PEFT-wrapped model, the remote-code path (a fresh
interpreter without the plugin) and the bf16/fp32 decode fast paths. `test_the_check_catches_a_cache_that_forgets`
shows the comparison is sharp enough to see the bug it guards against.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from transformers import DynamicCache

from hf_gpt1 import GPT1ForCausalLM, enable_cpu_speedups
from hf_gpt1.cpu_speed import _runtime
from testing_utils import assert_steps_equal_full_forward as steps_equal_full_forward
from testing_utils import randomize_biases_and_norms, run_python, tiny_gpt1_config

WIDE = dict(initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
ATOL = 2e-4  # fp32, logits of magnitude ~10 with this init
AVX512_BF16 = torch.cpu._is_avx512_bf16_supported()


def wide_model(seed: int = 0, **overrides) -> GPT1ForCausalLM:
    torch.manual_seed(seed)
    model = randomize_biases_and_norms(GPT1ForCausalLM(tiny_gpt1_config(**{**WIDE, **overrides})).eval())
    return enable_cpu_speedups(model, attention=False)  # the CPU speed paths (decode block etc.) are what generate runs


def full_forward_logits(model, sequences: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(sequences, attention_mask=attention_mask, use_cache=False).logits.float()


def assert_steps_equal_full_forward(model, out, prompt_len: int, attention_mask=None, atol=ATOL, rtol=0.0):
    steps_equal_full_forward(
        model, out, prompt_len, atol=atol, rtol=rtol, attention_mask=attention_mask, use_cache=False
    )


# pad_token_id=0 never occurs in the prompts (randint from 1): generate would infer a padding mask from it.
GENERATE = dict(max_new_tokens=10, min_new_tokens=10, pad_token_id=0, eos_token_id=None, return_dict_in_generate=True,
                output_logits=True, output_scores=True)  # fmt: skip


def test_the_check_catches_a_cache_that_forgets():
    """What a model that ignored its cache produced (every step attends only to itself) is far outside ATOL."""
    model = wide_model()
    ids = torch.randint(1, 99, (1, 12), generator=torch.Generator().manual_seed(1))
    full = full_forward_logits(model, ids)
    with torch.no_grad():
        model(ids[:, :6], cache=DynamicCache(config=model.config), use_cache=True)
        forgetful = [model(ids[:, t : t + 1], cache=DynamicCache(config=model.config), use_cache=True,
                           position_ids=torch.tensor([[t]])).logits[:, -1] for t in range(6, 12)]  # fmt: skip
    error = max((step - full[:, 6 + i]).abs().max().item() for i, step in enumerate(forgetful))
    assert error > 100 * ATOL, error


@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_steps_equal_full_forward_and_uncached_generation(batch):
    model = wide_model()
    prompt = torch.randint(1, 99, (batch, 7), generator=torch.Generator().manual_seed(2))
    cached = model.generate(prompt, do_sample=False, use_cache=True, **GENERATE)
    assert_steps_equal_full_forward(model, cached, prompt.shape[1])
    uncached = model.generate(prompt, do_sample=False, use_cache=False, **GENERATE)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=ATOL, rtol=0)


def test_sampling_steps_equal_full_forward_and_uncached_generation():
    model = wide_model()
    prompt = torch.randint(1, 99, (2, 5), generator=torch.Generator().manual_seed(3))
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outs.append(model.generate(prompt, do_sample=True, top_k=30, temperature=1.3, use_cache=use_cache, **GENERATE))
    assert_steps_equal_full_forward(model, outs[0], prompt.shape[1])
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    torch.testing.assert_close(torch.stack(outs[0].scores), torch.stack(outs[1].scores), atol=ATOL, rtol=0)


def test_beam_search_scores_equal_uncached_beam_search():
    """Beams are reordered between steps (the cache is re-indexed with them): per-step scores of every beam and the
    final sequence scores must equal those of beam search without a cache, which runs full forwards."""
    model = wide_model()
    prompt = torch.randint(1, 99, (2, 6), generator=torch.Generator().manual_seed(4))
    kwargs = dict(GENERATE, num_beams=3, num_return_sequences=2, do_sample=False, output_logits=False)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=ATOL, rtol=0)
    for step, (a, b) in enumerate(zip(cached.scores, uncached.scores)):
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite), step
        torch.testing.assert_close(a[finite], b[finite], atol=ATOL, rtol=0, msg=lambda m: f"step {step}: {m}")
    # And the best beam's tokens score, under a full forward, what beam search says they score.
    best = cached.sequences[::2]
    logprobs = torch.log_softmax(full_forward_logits(model, best), dim=-1)
    new = best[:, prompt.shape[1] :]
    total = logprobs[:, prompt.shape[1] - 1 : -1].gather(-1, new.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(total / new.shape[1], cached.sequences_scores[::2], atol=1e-3, rtol=0)


def test_left_padded_batch_steps_equal_each_row_alone():
    model = wide_model()
    pad = 0
    rows = [torch.randint(1, 99, (9,), generator=torch.Generator().manual_seed(5)),
            torch.randint(1, 99, (4,), generator=torch.Generator().manual_seed(6))]  # fmt: skip
    batch = torch.full((2, 9), pad)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, 9 - len(row) :], mask[i, 9 - len(row) :] = row, 1
    batched = model.generate(batch, attention_mask=mask, do_sample=False, **GENERATE)
    assert_steps_equal_full_forward(model, batched, 9, attention_mask=mask)
    for i, row in enumerate(rows):
        alone = model.generate(row.unsqueeze(0), do_sample=False, **GENERATE)
        assert torch.equal(batched.sequences[i, 9:], alone.sequences[0, len(row) :]), f"row {i} tokens"
        torch.testing.assert_close(
            torch.stack([step[i] for step in batched.logits]), torch.stack([step[0] for step in alone.logits]),
            atol=ATOL, rtol=0, msg=lambda m: f"row {i}: {m}",
        )  # fmt: skip


def test_return_dict_in_generate_hidden_states_and_attentions_match_full_forward():
    """`output_hidden_states`/`output_attentions` with the cache: each step's states and attention rows are those of
    the full forward at that position (the prefill step holds the whole prompt)."""
    model = wide_model()
    prompt = torch.randint(1, 99, (2, 5), generator=torch.Generator().manual_seed(7))
    out = model.generate(prompt, do_sample=False, output_hidden_states=True, output_attentions=True, **GENERATE)
    assert_steps_equal_full_forward(model, out, 5)
    with torch.no_grad():
        full = model(out.sequences, output_hidden_states=True, output_attentions=True)
    n_layer = model.config.n_layer
    assert len(out.hidden_states) == len(out.attentions) == 10
    for step, (states, attentions) in enumerate(zip(out.hidden_states, out.attentions)):
        assert len(states) == n_layer + 1 and len(attentions) == n_layer
        position = slice(0, 5) if step == 0 else slice(4 + step, 5 + step)
        for layer in range(n_layer + 1):
            torch.testing.assert_close(states[layer], full.hidden_states[layer][:, position], atol=ATOL, rtol=0)
        for layer in range(n_layer):
            expected = full.attentions[layer][:, :, position, : position.stop]
            torch.testing.assert_close(attentions[layer], expected, atol=1e-5, rtol=0)


def test_continuing_from_a_returned_cache_equals_one_long_generation():
    model = wide_model()
    prompt = torch.randint(1, 99, (1, 6), generator=torch.Generator().manual_seed(8))
    first = model.generate(prompt, do_sample=False, max_new_tokens=5, min_new_tokens=5, pad_token_id=0,
                           eos_token_id=None, return_dict_in_generate=True)  # fmt: skip
    assert first.cache.get_seq_length() == 10  # the last token is not in the cache yet
    continued = model.generate(first.sequences, cache=first.cache, do_sample=False, **GENERATE)
    assert_steps_equal_full_forward(model, continued, first.sequences.shape[1])
    whole = model.generate(prompt, do_sample=False, **{**GENERATE, "max_new_tokens": 15, "min_new_tokens": 15})
    assert torch.equal(continued.sequences, whole.sequences)


def test_generation_from_inputs_embeds_equals_from_ids():
    model = wide_model()
    prompt = torch.randint(1, 99, (2, 6), generator=torch.Generator().manual_seed(9))
    embeds = model.get_input_embeddings()(prompt).detach()
    from_ids = model.generate(prompt, do_sample=False, **GENERATE)
    from_embeds = model.generate(inputs_embeds=embeds, do_sample=False, **GENERATE)
    assert torch.equal(from_embeds.sequences, from_ids.sequences[:, 6:])  # only the new tokens, as transformers does
    torch.testing.assert_close(torch.stack(from_embeds.logits), torch.stack(from_ids.logits), atol=ATOL, rtol=0)


def test_token_type_ids_reach_every_step():
    """generate() accepts token_type_ids (as for OpenAIGPT), extends them with the last value, and each step's logits
    are those of a full forward with the same token types."""
    model = wide_model()
    prompt = torch.randint(1, 99, (1, 6), generator=torch.Generator().manual_seed(10))
    types_ = torch.tensor([[40, 40, 40, 41, 41, 41]]) % 99
    out = model.generate(prompt, token_type_ids=types_, do_sample=False, **GENERATE)
    full_types = torch.cat([types_, types_[:, -1:].expand(1, 10)], dim=1)
    with torch.no_grad():
        full = model(out.sequences, token_type_ids=full_types).logits
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(logits, full[:, 5 + step], atol=ATOL, rtol=0)
    plain = model.generate(prompt, do_sample=False, **GENERATE)
    assert not torch.allclose(torch.stack(plain.logits), torch.stack(out.logits))  # they were not ignored


def test_peft_wrapped_model_steps_equal_full_forward():
    from peft import LoraConfig, get_peft_model

    model = wide_model()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)).eval()  # B != 0
    prompt = torch.randint(1, 99, (2, 5), generator=torch.Generator().manual_seed(11))
    out = peft_model.generate(input_ids=prompt, do_sample=False, **GENERATE)
    assert_steps_equal_full_forward(peft_model, out, 5)
    with peft_model.disable_adapter():  # the adapter is live: without it the logits differ
        base = peft_model.generate(input_ids=prompt, do_sample=False, **GENERATE)
    assert not torch.allclose(torch.stack(base.logits), torch.stack(out.logits), atol=1e-2)


class _CountingKernels:
    """Stands in for torch.ops.hf_gpt1 inside the model and counts the fused decode-block calls."""

    def __init__(self, ops):
        self.ops, self.decode_blocks = ops, 0

    def __getattr__(self, name):
        op = getattr(self.ops, name)
        if name != "decode_block":
            return op

        def counted(*args):
            self.decode_blocks += 1
            return op(*args)

        return counted


@pytest.mark.skipif(not AVX512_BF16, reason="the decode block is built for CPUs with AVX512-BF16")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_fast_path_steps_equal_full_forward(dtype):
    ops = _runtime.cpu_kernels()
    assert ops, "the kernels must build where the CPU supports them"
    model = wide_model(n_embd=80, initializer_range=0.2).to(dtype)
    prompt = torch.randint(1, 99, (1, 7), generator=torch.Generator().manual_seed(12))
    counting = _CountingKernels(ops)
    saved, _runtime._CPU_KERNELS = _runtime._CPU_KERNELS, counting
    try:
        with torch.inference_mode():
            out = model.generate(prompt, do_sample=False, **GENERATE)
    finally:
        _runtime._CPU_KERNELS = saved
    assert counting.decode_blocks == 9 * model.config.n_layer  # every one-token step ran the fused block
    if dtype == torch.float32:
        assert_steps_equal_full_forward(model, out, 7)
    else:  # bf16: the block and the full forward round differently; a forgetting cache is off by whole units
        scale = max(step.float().abs().max().item() for step in out.logits)
        assert_steps_equal_full_forward(model, out, 7, atol=0.03 * scale)


@pytest.mark.slow
def test_remote_code_generation_steps_equal_full_forward(tmp_path):
    """A fresh interpreter without the plugin loads the checkpoint's own modeling file (trust_remote_code) and its
    cached generation matches its own full forward and this process's logits."""
    model = wide_model()
    model.save_pretrained(tmp_path / "lm")
    prompt = torch.randint(1, 99, (2, 6), generator=torch.Generator().manual_seed(13))
    expected = model.generate(prompt, do_sample=False, **GENERATE)
    code = textwrap.dedent(
        f"""
        import sys
        class _NoPlugin:
            def find_spec(self, name, path=None, target=None):
                if name == "hf_gpt1" or name.startswith("hf_gpt1."):
                    raise ImportError("hf_gpt1 is not installed here")
        sys.meta_path.insert(0, _NoPlugin())
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "lm")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        prompt = torch.tensor({prompt.tolist()!r})
        out = model.generate(prompt, do_sample=False, max_new_tokens=10, min_new_tokens=10, pad_token_id=0,
                             eos_token_id=None, return_dict_in_generate=True, output_logits=True)
        with torch.no_grad():
            full = model(out.sequences, use_cache=False).logits
        for step, logits in enumerate(out.logits):
            torch.testing.assert_close(logits, full[:, 5 + step], atol={ATOL}, rtol=0)
        assert "hf_gpt1" not in sys.modules
        torch.save((out.sequences, torch.stack(out.logits)), {str(tmp_path / "remote.pt")!r})
        """
    )
    result = run_python(code, env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sequences, logits = torch.load(tmp_path / "remote.pt")
    assert torch.equal(sequences, expected.sequences)
    torch.testing.assert_close(logits, torch.stack(expected.logits), atol=ATOL, rtol=0)
