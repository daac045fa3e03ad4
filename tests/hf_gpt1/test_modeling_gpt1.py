"""GPT-1 model family: parity with transformers' OpenAIGPT* reference, heads, losses, generation, errors.

Parity tests follow litgpt's `test_against_hf_*`: a random reference model is saved in the `openai-gpt`
layout, loaded through our `from_pretrained` (which converts it), and compared output by output.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    OpenAIGPTConfig,
    OpenAIGPTDoubleHeadsModel,
    OpenAIGPTForSequenceClassification,
    OpenAIGPTLMHeadModel,
    OpenAIGPTModel,
)

from hf_gpt1 import (
    GPT1Config,
    GPT1DoubleHeadsModel,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1Model,
    enable_cpu_speedups,
)
from testing_utils import no_dropout, save_reference, tiny_gpt1_config, tiny_openai_config

ATOL = 1e-5


def _right_padded_mask(batch: int, seq: int, lengths: list[int]) -> torch.Tensor:
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("mode", ["eval", "train_no_dropout"])
def test_lm_parity_with_reference(tmp_path, attn_implementation, padding, mode):
    config = tiny_openai_config(**no_dropout())
    reference = save_reference(OpenAIGPTLMHeadModel, config, tmp_path)
    ours = GPT1ForCausalLM.from_pretrained(tmp_path, attn_implementation=attn_implementation)
    assert isinstance(ours.config, GPT1Config) and ours.config._attn_implementation == attn_implementation
    if mode == "train_no_dropout":
        reference.train(), ours.train()
    else:
        ours.eval()

    torch.manual_seed(1)
    input_ids = torch.randint(0, config.vocab_size, (3, 17))
    lengths = [17, 11, 5] if padding else [17, 17, 17]
    mask = _right_padded_mask(3, 17, lengths) if padding else None
    with torch.set_grad_enabled(mode != "eval"):
        ref = reference(input_ids, attention_mask=mask, output_hidden_states=True)
        out = ours(input_ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == config.n_layer + 1
    valid = _right_padded_mask(3, 17, lengths).bool()
    for ours_h, ref_h in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(ours_h[valid], ref_h[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits[valid], ref.logits[valid], atol=ATOL, rtol=0)


@pytest.mark.slow
def test_full_size_gpt1_parity(tmp_path):
    """The paper's 117M configuration (default GPT1Config == default OpenAIGPTConfig)."""
    config = OpenAIGPTConfig(**no_dropout())
    reference = save_reference(OpenAIGPTLMHeadModel, config, tmp_path)
    ours = GPT1ForCausalLM.from_pretrained(tmp_path).eval()
    defaults = GPT1Config()
    assert (
        (ours.config.n_layer, ours.config.n_embd, ours.config.n_head, ours.config.vocab_size, ours.config.n_positions)
        == (defaults.n_layer, defaults.n_embd, defaults.n_head, defaults.vocab_size, defaults.n_positions)
        == (12, 768, 12, 40478, 512)
    )
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    input_ids = torch.randint(0, 40478, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, reference(input_ids).logits, atol=ATOL, rtol=0)


def test_base_model_parity_and_leading_dims(tmp_path):
    config = tiny_openai_config(**no_dropout())
    reference = save_reference(OpenAIGPTModel, config, tmp_path)
    ours = GPT1Model.from_pretrained(tmp_path).eval()
    input_ids = torch.randint(0, config.vocab_size, (2, 3, 9))  # (batch, choices, seq) stays (batch, choices, seq, E)
    with torch.no_grad():
        ref = reference(input_ids.view(-1, 9)).last_hidden_state.view(2, 3, 9, -1)
        out = ours(input_ids).last_hidden_state
    assert out.shape == (2, 3, 9, config.n_embd)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_sequence_classification_parity(tmp_path):
    config = tiny_openai_config(**no_dropout(), num_labels=3, pad_token_id=0)
    reference = save_reference(OpenAIGPTForSequenceClassification, config, tmp_path)
    ours = GPT1ForSequenceClassification.from_pretrained(tmp_path).eval()
    assert ours.config.num_labels == 3 and torch.all(ours.score.bias == 0)
    input_ids = torch.randint(1, config.vocab_size, (3, 12))
    input_ids[1, 8:] = 0  # right padding with the pad id, as the reference expects
    input_ids[2, 4:] = 0
    mask = (input_ids != 0).long()
    with torch.no_grad():
        ref = reference(input_ids, attention_mask=mask).logits
        # our head finds the last non-padding token itself when no extract id is configured
        out = ours(input_ids, attention_mask=mask).logits
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_double_heads_parity_including_losses(tmp_path):
    config = tiny_openai_config(**no_dropout(), summary_first_dropout=0.0)
    reference = save_reference(OpenAIGPTDoubleHeadsModel, config, tmp_path)
    ours = GPT1DoubleHeadsModel.from_pretrained(tmp_path).eval()
    input_ids = torch.randint(0, config.vocab_size, (2, 4, 10))
    mc_token_ids = torch.tensor([[9, 7, 9, 3], [5, 9, 9, 9]])
    lm_labels = input_ids.masked_fill(torch.rand(input_ids.shape) < 0.2, -100)
    mc_labels = torch.tensor([1, 3])
    with torch.no_grad():
        ref = reference(input_ids, mc_token_ids=mc_token_ids, labels=lm_labels, mc_labels=mc_labels)
        out = ours(input_ids, mc_token_ids=mc_token_ids, labels=lm_labels, mc_labels=mc_labels)
    for field in ("logits", "mc_logits", "loss", "mc_loss"):
        torch.testing.assert_close(getattr(out, field), getattr(ref, field), atol=ATOL, rtol=0, msg=field)

    # The same checkpoint as our multiple-choice head: its choice scores equal the reference's mc_logits.
    mc_model = GPT1ForMultipleChoice.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        mc_out = mc_model(input_ids, mc_token_ids=mc_token_ids, labels=mc_labels)
    torch.testing.assert_close(mc_out.logits, ref.mc_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(mc_out.task_loss, ref.mc_loss, atol=ATOL, rtol=0)


def _classifier(num_labels=2, **overrides):
    torch.manual_seed(0)
    return GPT1ForSequenceClassification(
        tiny_gpt1_config(**no_dropout(clf_pdrop=0.0), num_labels=num_labels, **overrides)
    ).eval()


def test_extract_token_is_found_by_id_then_falls_back_to_last_real_token():
    model = _classifier(extract_token_id=7, pad_token_id=8)
    input_ids = torch.tensor([[5, 1, 2, 7, 3, 8], [5, 1, 2, 3, 8, 8]])  # row 0 has the extract token at 3
    mask = (input_ids != 8).long()
    with torch.no_grad():
        hidden = model.transformer(input_ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids, attention_mask=mask).logits
        explicit = model(input_ids, attention_mask=mask, mc_token_ids=torch.tensor([3, 3])).logits
    expected = model.score(torch.stack([hidden[0, 3], hidden[1, 3]]))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(logits, explicit)


def test_similarity_mode_sums_both_orderings():
    model = _classifier(num_labels=1)
    a_b = torch.tensor([[5, 10, 11, 6, 12, 13, 7]])
    b_a = torch.tensor([[5, 12, 13, 6, 10, 11, 7]])
    pair = torch.stack([a_b, b_a], dim=1)  # (batch=1, 2, seq)
    positions = torch.tensor([[6, 6]])
    with torch.no_grad():
        logits = model(pair, mc_token_ids=positions).logits
        h_ab = model.transformer(a_b).last_hidden_state[0, 6]
        h_ba = model.transformer(b_a).last_hidden_state[0, 6]
    torch.testing.assert_close(logits, model.score(h_ab + h_ba).unsqueeze(0))
    # regression (num_labels == 1) uses MSE on the score
    out = model(pair, mc_token_ids=positions, labels=torch.tensor([3.5]))
    torch.testing.assert_close(out.task_loss, (logits.squeeze() - 3.5) ** 2)


@pytest.mark.parametrize("model_class", [GPT1ForSequenceClassification, GPT1ForMultipleChoice])
def test_fine_tuning_loss_is_task_plus_lambda_lm(model_class):
    torch.manual_seed(0)
    shape = (3, 9) if model_class is GPT1ForSequenceClassification else (3, 2, 9)
    input_ids = torch.randint(0, 99, shape)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., -2:] = 0  # padding is never scored by the LM loss
    labels = torch.tensor([1, 0, 1])
    losses = {}
    for lm_coef in (0.0, 0.5):
        torch.manual_seed(0)
        model = model_class(tiny_gpt1_config(**no_dropout(clf_pdrop=0.0), lm_coef=lm_coef)).eval()
        out = model(input_ids, attention_mask=mask, labels=labels)
        losses[lm_coef] = out
    off, on = losses[0.0], losses[0.5]
    assert off.lm_loss is None and torch.equal(off.loss, off.task_loss)
    torch.testing.assert_close(on.task_loss, off.task_loss)
    torch.testing.assert_close(on.loss, on.task_loss + 0.5 * on.lm_loss)
    # the LM part is a real next-token loss over the unpadded tokens
    torch.manual_seed(0)
    model = model_class(tiny_gpt1_config(**no_dropout(clf_pdrop=0.0), lm_coef=0.5)).eval()
    with torch.no_grad():
        hidden = model.transformer(input_ids, attention_mask=mask).last_hidden_state
        logits = model.lm_head(hidden)[..., :-1, :].reshape(-1, 99)
        targets = input_ids.masked_fill(mask == 0, -100)[..., 1:].reshape(-1)
        expected = torch.nn.functional.cross_entropy(logits, targets)
        got = model(input_ids, attention_mask=mask, labels=labels).lm_loss
    torch.testing.assert_close(got, expected)


def test_fine_tuning_heads_tie_lm_head_and_hide_loss_parts_from_trainer_gathering():
    model = _classifier()
    assert model.lm_head.weight is model.transformer.tokens_embed.weight
    assert {"task_loss", "lm_loss"} <= set(model.config.keys_to_ignore_at_inference)
    assert model.accepts_loss_kwargs is False


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_gpt1_config(**no_dropout()))
    input_ids = torch.randint(0, 99, (2, 16))

    def grads():
        model.zero_grad()
        model(input_ids, labels=input_ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    model.train()
    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_activation_checkpointing
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


# The tied token table in CPU training (hf_gpt1.cpu_speed's `GPT1TokenEmbedding`, `GPT1TiedLMHead`, swapped in by
# `enable_cpu_speedups`): reused buffers instead of fresh table-sized tensors. The plain modules are the reference: a no-op forward hook takes a module off that path.


def _with_plain_table_modules(model):
    for module in (model.transformer.tokens_embed, model.lm_head):
        module.register_forward_hook(lambda *args: None)
    return model


def _grads(model):
    return {name: param.grad for name, param in model.named_parameters() if param.grad is not None}


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
def test_tied_table_training_gives_the_plain_modules_gradients_step_after_step(autocast):
    """Three steps with different tokens: the reused lookup gradient must forget the previous step's rows, the reused
    bf16 table copy must follow the optimizer's updates. Every parameter's gradient, and the losses, as the plain
    modules'; the table's gradient is dense."""
    torch.manual_seed(0)
    fast = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config(**no_dropout())), attention=False).train()
    plain = _with_plain_table_modules(copy.deepcopy(fast))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (fast, plain)]
    for step in range(3):
        ids = torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(step))
        losses = []
        for model in (fast, plain):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(ids, labels=ids).loss
            loss.backward()
            losses.append(loss)
        fast_grads, plain_grads = _grads(fast), _grads(plain)
        assert (
            fast_grads.keys() == plain_grads.keys()
            and fast.transformer.tokens_embed.weight.grad.layout == torch.strided
        )
        torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-6)
        for name in plain_grads:
            torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    # The fast path ran: the lookup reused its gradient tensor, autocast used the reused bf16 copies.
    assert fast.transformer.tokens_embed._lookup_gradient.tensor is not None
    assert ("_bf16_table_copies" in fast.lm_head.__dict__) == autocast
    assert plain.transformer.tokens_embed._lookup_gradient is None


def test_tied_table_buffers_are_released_by_eval_and_made_again_by_training():
    """A model trained and then used for inference keeps no table-sized training buffers; training after `eval()`
    (Trainer's evaluation loop does this) makes them again and gives the same gradients as the plain modules."""
    torch.manual_seed(0)
    fast = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config(**no_dropout())), attention=False).train()
    plain = _with_plain_table_modules(copy.deepcopy(fast))
    ids = torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fast(ids, labels=ids).loss
    fast.eval()  # between forward and backward: the pending graph keeps its buffers
    loss.backward()
    assert "_bf16_table_copies" not in fast.lm_head.__dict__ and fast.transformer.tokens_embed._lookup_gradient is None
    assert fast.transformer.tokens_embed.tied_table is None
    with torch.no_grad():
        fast(ids)
    assert "_bf16_table_copies" not in fast.lm_head.__dict__ and fast.transformer.tokens_embed._lookup_gradient is None
    for model in (fast, plain):
        model.zero_grad(set_to_none=True)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids, labels=ids).loss.backward()
    assert (
        "_bf16_table_copies" in fast.lm_head.__dict__
        and fast.transformer.tokens_embed._lookup_gradient.tensor is not None
    )
    for name, grad in _grads(plain).items():
        torch.testing.assert_close(_grads(fast)[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_tied_table_gradients_handed_out_are_never_reused():
    """`torch.autograd.grad` hands the table's gradient to the caller: a later backward pass must not change it."""
    torch.manual_seed(0)
    model = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config(**no_dropout())), attention=False).train()
    table = model.transformer.tokens_embed.weight
    results = []
    for seed in range(3):
        ids = torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(seed))
        (grad,) = torch.autograd.grad(model(ids, labels=ids).loss, table)
        results.append((grad, grad.clone()))
    assert model.transformer.tokens_embed._lookup_gradient.tensor is not None
    for grad, snapshot in results:
        assert grad is not model.transformer.tokens_embed._lookup_gradient.tensor and torch.equal(grad, snapshot)


def test_tied_table_special_cases_match_the_plain_modules():
    """Two forward passes before one backward (the LM head's bf16 copy is overwritten in between), a classifier without
    the auxiliary LM loss (no LM head gradient: the lookup's own dense gradient), a frozen table."""
    torch.manual_seed(0)
    fast = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config(**no_dropout())), attention=False).train()
    plain = _with_plain_table_modules(copy.deepcopy(fast))
    first, second = (torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    for model in (fast, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = [model(first, labels=first).loss, 0.5 * model(second, labels=second).loss]
        if model is fast:
            sum(losses).backward()
        else:  # one backward pass would sum both LM-head gradients in bf16 (autocast's single cached bf16 copy of the
            for loss in losses:  # table receives both); the fast path sums them in fp32, as separate passes do
                loss.backward(retain_graph=True)
    table = lambda model: model.transformer.tokens_embed.weight.grad  # noqa: E731
    torch.testing.assert_close(table(fast), table(plain), rtol=1e-5, atol=1e-7)

    config = tiny_gpt1_config(**no_dropout(clf_pdrop=0.0), num_labels=2, lm_coef=0.0)
    fast = enable_cpu_speedups(GPT1ForSequenceClassification(config), attention=False).train()
    plain = copy.deepcopy(fast)
    plain.transformer.tokens_embed.register_forward_hook(lambda *args: None)
    for model in (fast, plain):
        model(first, labels=torch.tensor([0, 1])).loss.backward()
    assert (
        fast.transformer.tokens_embed._lookup_gradient.tensor is None
    )  # nothing to add the rows into: a fresh dense gradient
    for name, grad in _grads(plain).items():
        torch.testing.assert_close(_grads(fast)[name], grad, rtol=1e-5, atol=1e-7, msg=name)

    frozen = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config(**no_dropout())), attention=False).train()
    frozen.transformer.tokens_embed.weight.requires_grad_(False)
    frozen(first, labels=first).loss.backward()
    assert frozen.transformer.tokens_embed.weight.grad is None and frozen.transformer.h[0].ln_1.weight.grad is not None


def test_resize_token_embeddings_for_special_tokens():
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_gpt1_config())
    old = model.transformer.tokens_embed.weight.detach().clone()
    model.resize_token_embeddings(103)
    assert model.config.vocab_size == 103
    assert model.lm_head.weight is model.transformer.tokens_embed.weight
    torch.testing.assert_close(model.transformer.tokens_embed.weight[:99], old)
    assert model(torch.tensor([[100, 101, 102]])).logits.shape == (1, 3, 103)


# ---------------------------------------------------------------------------------------------------------------------
# Generation with the KV cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def lm_pair(tmp_path):
    config = tiny_openai_config()
    reference = save_reference(OpenAIGPTLMHeadModel, config, tmp_path)
    ours = GPT1ForCausalLM.from_pretrained(tmp_path).eval()
    return reference, ours


def test_greedy_generation_matches_reference_and_cache_is_transparent(lm_pair):
    reference, ours = lm_pair
    prompt = torch.randint(0, 99, (1, 7))
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=0)
    with_cache = ours.generate(prompt, use_cache=True, **kwargs)
    without_cache = ours.generate(prompt, use_cache=False, **kwargs)
    ref = reference.generate(prompt, use_cache=False, **kwargs)
    assert with_cache.shape == (1, 27)
    assert torch.equal(with_cache, without_cache)
    assert torch.equal(with_cache, ref)


def test_sampled_generation_same_with_and_without_cache(lm_pair):
    _, ours = lm_pair
    prompt = torch.randint(0, 99, (2, 5))
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outs.append(
            ours.generate(prompt, do_sample=True, top_k=20, max_new_tokens=15, use_cache=use_cache, pad_token_id=0)
        )
    assert torch.equal(outs[0], outs[1])


def test_incremental_decoding_of_left_padded_batch_matches_unpadded_rows(lm_pair):
    _, ours = lm_pair
    pad = 0
    rows = [torch.randint(1, 99, (9,)), torch.randint(1, 99, (4,))]
    batch = torch.full((2, 9), pad)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, 9 - len(row) :] = row
        mask[i, 9 - len(row) :] = 1
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=pad)
    batched = ours.generate(batch, attention_mask=mask, **kwargs)
    for i, row in enumerate(rows):
        alone = ours.generate(row.unsqueeze(0), **kwargs)
        assert torch.equal(batched[i, 9:], alone[0, len(row) :]), f"row {i} diverged after left padding"


def test_cache_object_and_positions_in_manual_decoding(lm_pair):
    _, ours = lm_pair
    ids = torch.randint(0, 99, (1, 10))
    with torch.no_grad():
        full = ours(ids).logits
        first = ours(ids[:, :6], use_cache=True)
        assert first.cache.get_seq_length() == 6
        logits, cache = [first.logits], first.cache
        for t in range(6, 10):
            step = ours(ids[:, t : t + 1], cache=cache, use_cache=True)
            logits.append(step.logits)
            cache = step.cache
    torch.testing.assert_close(torch.cat(logits, dim=1), full, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input gets a clear error
# ---------------------------------------------------------------------------------------------------------------------


def test_too_long_input_names_the_limit():
    model = GPT1ForCausalLM(tiny_gpt1_config()).eval()
    with pytest.raises(ValueError, match=r"64 learned positions.*max_length=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_out_of_vocabulary_ids_point_to_add_special_tokens():
    model = GPT1ForCausalLM(tiny_gpt1_config()).eval()
    with pytest.raises(ValueError, match=r"id 99, outside the embedding table \[0, 99\).*add_special_tokens"):
        model(torch.tensor([[1, 99]]))


def test_config_rejects_indivisible_heads():
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPT1Config(n_embd=30, n_head=4)


def test_multiple_choice_needs_three_dims_and_valid_labels():
    model = GPT1ForMultipleChoice(tiny_gpt1_config())
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq_len\)"):
        model(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"choice indices in \[0, 2\)"):
        model(torch.zeros(1, 2, 5, dtype=torch.long), labels=torch.tensor([2]))


def test_classifier_labels_outside_label_set():
    model = _classifier(num_labels=2)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\).*got values in \[0, 5\]"):
        model(torch.zeros(2, 4, dtype=torch.long), labels=torch.tensor([0, 5]))


def test_openai_gpt_checkpoint_with_wrong_embedding_shape_is_reported(tmp_path):
    config = tiny_openai_config()
    save_reference(OpenAIGPTLMHeadModel, config, tmp_path)
    with pytest.raises(ValueError, match=r"size mismatch|tokens_embed"):
        GPT1ForCausalLM.from_pretrained(tmp_path, vocab_size=120)


def test_checkpoint_of_another_model_type_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=50)
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a 'bert' checkpoint; GPT1ForCausalLM loads 'gpt1'"):
        GPT1ForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "corrupted_header"])
def test_damaged_safetensors_name_the_checkpoint(tmp_path, damage):
    GPT1ForCausalLM(tiny_gpt1_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[10:40] = b"x" * 30
    weights.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"Could not read the weights of .*truncated or corrupted"):
        GPT1ForCausalLM.from_pretrained(tmp_path)


def test_auxiliary_lm_loss_is_a_per_sequence_mean_like_the_original_code():
    """train.py: sum of token losses / tokens, per sequence, then the batch mean; short rows weigh as much as long."""
    torch.manual_seed(0)
    model = GPT1ForSequenceClassification(tiny_gpt1_config(**no_dropout(clf_pdrop=0.0))).eval()
    input_ids = torch.randint(0, 99, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 4:] = 0  # row 1 has 3 scored tokens, row 0 has 9
    with torch.no_grad():
        got = model(input_ids, attention_mask=mask, labels=torch.tensor([0, 1])).lm_loss
        per_row = []
        for row, length in ((0, 10), (1, 4)):
            logits = model.lm_head(model.transformer(input_ids[row : row + 1, :length]).last_hidden_state)[0, :-1]
            per_row.append(torch.nn.functional.cross_entropy(logits, input_ids[row, 1:length]))
    torch.testing.assert_close(got, torch.stack(per_row).mean())


# The LM loss: chunked fp32 cross-entropy on CPU, same numbers as transformers' ForCausalLMLoss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_num_items", [False, True])
def test_causal_lm_loss_matches_transformers_for_causal_lm_loss(monkeypatch, dtype, with_num_items):
    from transformers.loss.loss_utils import ForCausalLMLoss

    from hf_gpt1.cpu_speed import loss as cpu_loss

    monkeypatch.setattr(cpu_loss, "_LOSS_CHUNK_ELEMENTS", 3 * 97)  # 3 rows per chunk: many chunks, a ragged last one
    torch.manual_seed(0)
    logits = (torch.randn(3, 11, 97) * 4).to(dtype).requires_grad_()
    labels = torch.randint(0, 97, (3, 11))
    labels[0, :4] = -100  # prompt positions not scored
    labels[2] = -100  # a row with nothing to score
    num_items = torch.tensor(17) if with_num_items else None
    expected = ForCausalLMLoss(logits, labels, vocab_size=97, num_items_in_batch=num_items)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    ours = cpu_loss.causal_lm_loss(logits, labels, num_items_in_batch=num_items)
    (our_grad,) = torch.autograd.grad(ours, logits)
    assert ours.dtype == torch.float32 and our_grad.dtype == dtype
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    tolerance = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-4)  # bf16 rounding
    torch.testing.assert_close(our_grad, expected_grad, **tolerance)
    assert not our_grad[2].any() and not our_grad[0, :3].any()  # unscored positions get no gradient


def test_lm_cross_entropy_per_token_and_degenerate_inputs():
    from hf_gpt1.cpu_speed.loss import causal_lm_loss, lm_cross_entropy

    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1e4]]], requires_grad=True)  # a huge logit stays finite
    targets = torch.tensor([[0, -100, 0]])
    losses = lm_cross_entropy(logits, targets)
    assert losses.shape == (1, 3)
    torch.testing.assert_close(losses, torch.tensor([[torch.log(torch.tensor(2.0)).item(), 0.0, 1e4]]))
    assert torch.isnan(causal_lm_loss(logits, torch.full((1, 3), -100)))  # nothing scored: nan, as F.cross_entropy


def test_lm_loss_of_the_model_is_the_reference_loss_under_bf16_autocast(tmp_path):
    save_reference(OpenAIGPTLMHeadModel, tiny_openai_config(**no_dropout()), tmp_path)
    reference = OpenAIGPTLMHeadModel.from_pretrained(tmp_path)
    ours = GPT1ForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 99, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = reference(ids, labels=ids).loss, ours(ids, labels=ids).loss
    got.backward()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)  # bf16 matmuls on both sides
    assert ours.transformer.tokens_embed.weight.grad is not None
