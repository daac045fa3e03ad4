"""PEFT on GPT-1 out of the box: default target modules, task heads, special-token rows, reload, merge, generate,
activation checkpointing. Tiny models, the real GPT-1 BPE, real SST-2 / MRPC / Story Cloze rows, real peft objects."""

from __future__ import annotations

import csv
import json
import textwrap

import pytest
import torch
from peft import (
    AdaLoraConfig,
    AutoPeftModel,
    AutoPeftModelForSequenceClassification,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftModel,
    get_peft_model,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import constants as peft_constants
from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hf_gpt1 import (
    GPT1DoubleHeadsModel,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
)
from hf_gpt1.peft_integration import (
    IA3_FEEDFORWARD_MODULES,
    IA3_TARGET_MODULES,
    LORA_TARGET_MODULES,
    directory_size,
    infer_task,
    make_peft_config,
    make_peft_model,
    merge_adapter,
    register_peft_mappings,
    save_adapter,
    special_token_indices,
    trainable_parameter_report,
)
from hf_gpt1.tokenization_gpt1 import add_special_tokens, load_gpt1_tokenizer
from testing_utils import assert_modes_follow_umask, no_dropout, run_python, tiny_gpt1_config

register_peft_mappings()  # what `import hf_gpt1` does once the package calls it (see test_import_registers...)

BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
N_LAYER = 2
TOL = 1e-5


# ----------------------------------------------------------------------------------------------------------------------
# Data and models
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_gpt1_tokenizer(tokenizer_dir)


def _read_tsv(path, n):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[:n]


@pytest.fixture(scope="module")
def sst2(glue_dir, tokenizer):
    """8 real SST-2 training sentences, framed `_start_ text _classify_`, right-padded."""
    rows = _read_tsv(glue_dir / "SST-2" / "train.tsv", 8)
    batch = tokenizer([r["sentence"].strip() for r in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([int(r["label"]) for r in rows])
    assert 0 < int(labels.sum()) < len(labels)  # both classes present
    return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)


@pytest.fixture(scope="module")
def mrpc(glue_dir, tokenizer):
    """4 real MRPC pairs in the paper's similarity layout: (batch, 2, seq) = both orderings of each pair."""
    rows = _read_tsv(glue_dir / "MRPC" / "train.tsv", 4)
    a, b = [r["#1 String"] for r in rows], [r["#2 String"] for r in rows]
    first, second = tokenizer(a, b), tokenizer(b, a)
    length = max(len(ids) for ids in first["input_ids"] + second["input_ids"])
    assert length <= 128
    first = tokenizer(a, b, padding="max_length", max_length=length, return_tensors="pt")
    second = tokenizer(b, a, padding="max_length", max_length=length, return_tensors="pt")
    return dict(
        input_ids=torch.stack([first["input_ids"], second["input_ids"]], dim=1),
        attention_mask=torch.stack([first["attention_mask"], second["attention_mask"]], dim=1),
        labels=torch.tensor([int(r["Quality"]) for r in rows]),
    )


@pytest.fixture(scope="module")
def story_cloze(shared_data, tokenizer):
    """4 real Story Cloze stories as (batch, 2 endings, seq): `_start_ story _delimiter_ ending _classify_`."""
    path = shared_data / "rocstories" / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:4]
    contexts = [" ".join(r[f"InputSentence{i}"] for i in range(1, 5)) for r in rows]
    endings = [(r["RandomFifthSentenceQuiz1"], r["RandomFifthSentenceQuiz2"]) for r in rows]
    first_texts = [c for c in contexts for _ in range(2)]
    second_texts = [e for pair in endings for e in pair]
    flat = tokenizer(first_texts, second_texts, padding=True, return_tensors="pt")
    seq = flat["input_ids"].shape[-1]
    return dict(
        input_ids=flat["input_ids"].reshape(len(rows), 2, seq),
        attention_mask=flat["attention_mask"].reshape(len(rows), 2, seq),
        labels=torch.tensor([int(r["AnswerRightEnding"]) - 1 for r in rows]),
    )


def tiny_model(model_class, tokenizer, *, seed=0, vocab_size=None, special_tokens=True, **overrides):
    """A tiny GPT-1 sized for the real tokenizer (no dropout anywhere, so runs are deterministic)."""
    torch.manual_seed(seed)
    config = tiny_gpt1_config(
        vocab_size=vocab_size or len(tokenizer), n_positions=128, clf_pdrop=0.0, **no_dropout(**overrides)
    )
    model = model_class(config)
    if special_tokens:
        add_special_tokens(model, tokenizer, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def train(model, batch, steps=24, lr=3e-3, loss_key="loss"):
    """`steps` full-batch AdamW steps (weight_decay=0: a parameter without gradient must not move).
    Returns (loss at the first step, loss after the last)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        loss = getattr(model(**batch), loss_key)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        final = getattr(model(**batch), loss_key).item()
    return losses[0], final


def adapted_modules(model) -> set[str]:
    """Names (relative to the base model) of modules replaced by an adapter layer (not head/token wrappers)."""
    base = model.get_base_model()
    return {
        name
        for name, module in base.named_modules()
        if isinstance(module, BaseTunerLayer)
        and not isinstance(module, (ModulesToSaveWrapper, TrainableTokensWrapper))
        and not name.endswith("token_adapter")
    }


def expected_block_modules(suffixes, n_layer=N_LAYER) -> set[str]:
    return {f"transformer.h.{i}.{suffix}" for i in range(n_layer) for suffix in suffixes}


def base_tensors_inside(peft_model) -> dict[str, torch.Tensor]:
    """The base model's own tensors as they sit inside the PEFT wrappers, under the plain model's key names."""
    tensors = {}
    for key, tensor in peft_model.get_base_model().state_dict().items():
        if any(part in key for part in ("lora_", ".modules_to_save.", "trainable_tokens_", "ia3_")):
            continue
        name = key.replace(".token_adapter", "").replace(".base_layer", "").replace(".original_module", "")
        tensors[name] = tensor
    return tensors


def outputs(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits, out.lm_loss


def assert_same_outputs(model, batch, reference, tol=TOL):
    logits, lm_loss = outputs(model, batch)
    ref_logits, ref_lm_loss = reference
    assert (logits - ref_logits).abs().max().item() <= tol
    assert abs(lm_loss.item() - ref_lm_loss.item()) <= tol  # the tied LM head carries the trained rows too


# ----------------------------------------------------------------------------------------------------------------------
# Registration and defaults
# ----------------------------------------------------------------------------------------------------------------------


def test_register_peft_mappings_is_idempotent_and_keeps_user_entries():
    first = register_peft_mappings()
    second = register_peft_mappings()
    assert first == second
    assert peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gpt1"] == list(LORA_TARGET_MODULES)
    assert peft_constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING["gpt1"] == list(IA3_TARGET_MODULES)
    ia3_feedforward = peft_constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
    assert ia3_feedforward["gpt1"] == list(IA3_FEEDFORWARD_MODULES)
    from peft import LoraModel

    assert LoraModel.target_module_mapping["gpt1"] == list(LORA_TARGET_MODULES)

    mapping = peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    mapping["gpt1-user-test"] = ["c_attn"]
    try:
        register_peft_mappings("gpt1-user-test")
        assert mapping["gpt1-user-test"] == ["c_attn"]  # a user's own choice wins
    finally:
        for name in list(vars(peft_constants)):
            table = getattr(peft_constants, name)
            if isinstance(table, dict):
                table.pop("gpt1-user-test", None)


@pytest.mark.slow
def test_import_hf_gpt1_registers_the_mappings(tmp_path):
    """In a fresh interpreter, `import hf_gpt1` alone makes get_peft_model work without target_modules."""
    code = textwrap.dedent(
        """
        import hf_gpt1, torch
        from peft import LoraConfig, get_peft_model
        config = hf_gpt1.GPT1Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        model = hf_gpt1.GPT1ForCausalLM(config)
        peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
        print(sorted(peft_model.peft_config["default"].target_modules))
        """
    )
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(sorted(LORA_TARGET_MODULES))


HEAD_CASES = [
    (GPT1ForSequenceClassification, "SEQ_CLS", {"score"}),
    (GPT1ForCausalLM, "CAUSAL_LM", set()),
    (GPT1ForMultipleChoice, None, set()),
    (GPT1DoubleHeadsModel, None, set()),
]


@pytest.mark.parametrize("model_class, task_type, heads", HEAD_CASES, ids=lambda c: getattr(c, "__name__", None))
def test_lora_without_target_modules_adapts_every_block_linear(tokenizer, model_class, task_type, heads):
    model = tiny_model(model_class, tokenizer)
    peft_model = get_peft_model(model, LoraConfig(task_type=task_type, r=4))  # plain PEFT, no target_modules
    assert adapted_modules(peft_model) == expected_block_modules(BLOCK_LINEARS)
    wrapped_heads = {n for n, m in peft_model.get_base_model().named_modules() if isinstance(m, ModulesToSaveWrapper)}
    assert wrapped_heads == heads  # SEQ_CLS: PEFT itself adds "score" to modules_to_save
    assert not isinstance(peft_model.get_base_model().lm_head, BaseTunerLayer)


def test_ia3_defaults_scale_qkv_and_the_feedforward_input(tokenizer, sst2):
    model = tiny_model(GPT1ForSequenceClassification, tokenizer, num_labels=2, lm_coef=0.0)
    peft_model = get_peft_model(model, IA3Config(task_type="SEQ_CLS"))
    assert adapted_modules(peft_model) == expected_block_modules(("attn.c_attn", "mlp.c_proj"))
    base = peft_model.get_base_model()
    for i in range(N_LAYER):
        assert base.transformer.h[i].mlp.c_proj.is_feedforward  # scales its 4E-wide input
        assert not base.transformer.h[i].attn.c_attn.is_feedforward  # scales the q/k/v outputs
        assert base.transformer.h[i].mlp.c_proj.ia3_l["default"].shape[-1] == 4 * model.config.n_embd
    first, last = train(peft_model, sst2, steps=10, lr=1e-2)
    assert last < first


@pytest.mark.parametrize(
    "config, suffixes",
    [
        (LoHaConfig(r=2), BLOCK_LINEARS),
        (LoKrConfig(r=2), BLOCK_LINEARS),
        (AdaLoraConfig(init_r=4, target_r=2, total_step=10), BLOCK_LINEARS),
        (LNTuningConfig(), ("ln_1", "ln_2")),
    ],
    ids=["loha", "lokr", "adalora", "ln_tuning"],
)
def test_other_tuners_find_their_gpt1_defaults(tokenizer, config, suffixes):
    model = tiny_model(GPT1ForCausalLM, tokenizer)
    ids = torch.tensor([[40478, 11, 12, 13]])
    with torch.no_grad():
        before = model(ids).logits
    peft_model = get_peft_model(model, config)
    assert adapted_modules(peft_model) == expected_block_modules(suffixes)
    with torch.no_grad():
        after = peft_model(input_ids=ids).logits
    assert after.shape == before.shape and torch.isfinite(after).all()


def test_make_peft_config_choices_and_errors(tokenizer):
    model = tiny_model(GPT1ForMultipleChoice, tokenizer)
    assert special_token_indices(model) == [40478, 40479, 40480, 40481]
    assert infer_task(model) == "multiple_choice"
    config = make_peft_config(model)
    assert config.task_type is None and config.modules_to_save == ["score"]
    assert config.trainable_token_indices == [40478, 40479, 40480, 40481]
    assert config.r == 8 and config.lora_alpha == 16 and config.lora_dropout == 0.05

    double = make_peft_config(tiny_model(GPT1DoubleHeadsModel, tokenizer), r=2)
    assert double.modules_to_save == ["multiple_choice_head"]

    with pytest.warns(UserWarning, match="trainable_token_indices for LoRA only"):
        ia3 = make_peft_config(model, "ia3")
    assert isinstance(ia3, IA3Config) and ia3.modules_to_save == ["score"]
    with pytest.raises(ValueError, match="method='lora' only"):
        make_peft_config(model, "ia3", embeddings="tokens")
    with pytest.raises(ValueError, match="task must be"):
        make_peft_config(model, task="token_cls")
    with pytest.raises(ValueError, match="method must be"):
        make_peft_config(model, "prefix")
    bare = tiny_model(GPT1ForCausalLM, tokenizer, special_tokens=False)
    assert special_token_indices(bare) == []
    assert make_peft_config(bare).trainable_token_indices is None  # nothing to train: embeddings frozen
    with pytest.raises(ValueError, match="add_special_tokens"):
        make_peft_config(bare, embeddings="tokens")
    with pytest.raises(ValueError, match="do not all fit"):
        make_peft_config(bare, special_token_ids=[10**6])


def test_save_adapter_warns_when_the_base_is_not_a_gpt1_checkpoint(tokenizer, tmp_path):
    from transformers import OpenAIGPTConfig

    OpenAIGPTConfig(n_layer=1).save_pretrained(tmp_path / "openai")
    peft_model = make_peft_model(tiny_model(GPT1ForCausalLM, tokenizer), r=2, embeddings="none")
    with pytest.warns(UserWarning, match="'openai-gpt' checkpoint, not 'gpt1'"):
        info = save_adapter(peft_model, tmp_path / "adapter", base_model_name_or_path=tmp_path / "openai")
    assert info["adapter_bytes"] > 0


# ----------------------------------------------------------------------------------------------------------------------
# SST-2: train, what changed, size, reload, merge
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, tokenizer, sst2):
    """Train a LoRA adapter on SST-2 rows the way a user would, starting from a "Hub" base that has never seen the
    special tokens (40,478 rows, no special ids in its config), resized with add_special_tokens."""
    root = tmp_path_factory.mktemp("sst2")
    hub_dir, base_dir, adapter_dir = root / "hub_base", root / "base", root / "adapter"
    hub_model = tiny_model(
        GPT1ForSequenceClassification, tokenizer, vocab_size=40478, special_tokens=False, num_labels=2
    )
    hub_model.save_pretrained(hub_dir)

    model = AutoModelForSequenceClassification.from_pretrained(hub_dir)
    add_special_tokens(model, tokenizer, generator=torch.Generator().manual_seed(1))
    model.save_pretrained(base_dir)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    initial_rows = model.get_input_embeddings().weight.detach().clone()

    torch.manual_seed(0)
    peft_model = make_peft_model(model, r=8, alpha=16, dropout=0.0)
    report = trainable_parameter_report(peft_model)
    trainable_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        initial = peft_model(**sst2)
    first, last = train(peft_model, sst2)
    with torch.no_grad():
        final = peft_model(**sst2)
    reference = outputs(peft_model, sst2)
    info = save_adapter(peft_model, adapter_dir, base_model_name_or_path=hub_dir, tokenizer=tokenizer)
    return dict(
        hub_dir=hub_dir,
        base_dir=base_dir,
        adapter_dir=adapter_dir,
        peft_model=peft_model,
        report=report,
        before=before,
        initial_rows=initial_rows,
        trainable_before=trainable_before,
        initial=initial,
        final=final,
        first=first,
        last=last,
        reference=reference,
        info=info,
    )


def test_sst2_adapter_training_lowers_the_loss(sst2_run):
    print(
        f"\nSST-2 loss (task + 0.5 LM) {sst2_run['first']:.3f} -> {sst2_run['last']:.3f}; task loss "
        f"{sst2_run['initial'].task_loss:.3f} -> {sst2_run['final'].task_loss:.3f}"
    )
    assert sst2_run["last"] < 0.95 * sst2_run["first"]
    assert sst2_run["final"].task_loss < 0.5 * sst2_run["initial"].task_loss
    assert sst2_run["final"].lm_loss < sst2_run["initial"].lm_loss


def test_sst2_only_adapter_head_and_special_rows_are_trainable(sst2_run):
    prefix = "base_model.model."
    expected = {f"{prefix}{m}.lora_{ab}.default.weight" for m in expected_block_modules(BLOCK_LINEARS) for ab in "AB"}
    expected |= {f"{prefix}score.modules_to_save.default.weight", f"{prefix}score.modules_to_save.default.bias"}
    expected |= {f"{prefix}transformer.tokens_embed.token_adapter.trainable_tokens_delta.default"}
    report = sst2_run["report"]
    assert set(report["trainable_names"]) == expected
    config = sst2_run["peft_model"].get_base_model().config
    E, r = config.n_embd, 8
    lora = N_LAYER * r * ((E + 3 * E) + (E + E) + (E + 4 * E) + (4 * E + E))
    assert report["by_kind"] == {"lora": lora, "trainable_tokens": 4 * E, "modules_to_save": 2 * E + 2}
    assert report["trainable"] == sum(report["by_kind"].values()) and report["trainable"] < 0.01 * report["total"]
    print(
        f"\nSST-2 LoRA r=8: {report['trainable']:,} trainable of {report['total']:,} "
        f"({report['trainable_percent']:.3f}%)"
    )

    # every trainable tensor moved (LoRA B starts at zero, so A moves too once B is non-zero)
    now = dict(sst2_run["peft_model"].named_parameters())
    for name, before in sst2_run["trainable_before"].items():
        assert not torch.equal(now[name], before), name


def test_sst2_base_weights_are_bit_identical(sst2_run):
    inside = base_tensors_inside(sst2_run["peft_model"])
    before = sst2_run["before"]
    assert set(inside) == set(before)  # every base tensor accounted for, nothing extra
    for name, tensor in before.items():
        assert torch.equal(inside[name], tensor), name


def test_sst2_special_token_rows_change_and_no_other_row_does(sst2_run):
    peft_model = sst2_run["peft_model"]
    effective = peft_model.get_input_embeddings().weight  # merged view: base table with the trained rows written in
    changed = (effective != sst2_run["initial_rows"]).any(dim=-1).nonzero().flatten().tolist()
    # start/extract get gradient from the inputs, delimiter/pad through the tied LM head's softmax
    assert changed == special_token_indices(peft_model.get_base_model()) == [40478, 40479, 40480, 40481]
    lm_head = peft_model.get_base_model().lm_head
    assert isinstance(lm_head, TrainableTokensWrapper)
    assert torch.equal(lm_head.weight, effective)  # the LM head sees the same trained rows (tied)


def test_sst2_adapter_is_small_on_disk(sst2_run):
    info = sst2_run["info"]
    full_bytes = (sst2_run["base_dir"] / "model.safetensors").stat().st_size
    print(
        f"\nadapter_model.safetensors: {info['adapter_bytes']:,} bytes; adapter folder {info['total_bytes']:,} bytes "
        f"(incl. tokenizer); full model.safetensors: {full_bytes:,} bytes"
    )
    assert "adapter_model.safetensors" in info["files"] and "tokenizer_config.json" in info["files"]
    assert info["adapter_bytes"] < full_bytes / 50
    saved = load_file(sst2_run["adapter_dir"] / "adapter_model.safetensors")
    assert not any("tokens_embed.weight" in k or "lm_head.weight" in k for k in saved)  # no full table
    assert saved["base_model.model.transformer.tokens_embed.token_adapter.trainable_tokens_delta"].shape == (4, 32)
    adapter_config = json.loads((sst2_run["adapter_dir"] / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(sst2_run["hub_dir"])
    assert adapter_config["task_type"] == "SEQ_CLS"
    assert adapter_config["trainable_token_indices"] == [40478, 40479, 40480, 40481]
    assert directory_size(sst2_run["adapter_dir"]) == info["total_bytes"]
    assert_modes_follow_umask(sst2_run["adapter_dir"])  # weights as readable as adapter_config.json


def test_sst2_reload_with_peft_model_from_pretrained(sst2_run, sst2):
    base = AutoModelForSequenceClassification.from_pretrained(sst2_run["base_dir"])
    reloaded = PeftModel.from_pretrained(base, sst2_run["adapter_dir"]).eval()
    assert_same_outputs(reloaded, sst2, sst2_run["reference"])


def test_sst2_reload_onto_differently_initialised_special_rows(sst2_run, sst2, tokenizer):
    """The adapter stores the trained rows' values: any base resized by add_special_tokens reproduces the model."""
    base = AutoModelForSequenceClassification.from_pretrained(sst2_run["hub_dir"])
    add_special_tokens(base, tokenizer, generator=torch.Generator().manual_seed(1234))
    assert not torch.equal(base.get_input_embeddings().weight[40478:], sst2_run["initial_rows"][40478:])
    reloaded = PeftModel.from_pretrained(base, sst2_run["adapter_dir"]).eval()
    assert_same_outputs(reloaded, sst2, sst2_run["reference"])


def test_sst2_reload_with_auto_peft_model(sst2_run, sst2):
    """AutoPeft loads the base named in adapter_config.json (40,478 rows), grows it to the saved tokenizer, and the
    adapter fills in the special rows."""
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(sst2_run["adapter_dir"]).eval()
    assert isinstance(reloaded.get_base_model(), GPT1ForSequenceClassification)
    assert reloaded.get_base_model().config.vocab_size == 40482
    assert_same_outputs(reloaded, sst2, sst2_run["reference"])


def test_sst2_merge_and_unload_gives_a_plain_gpt1_checkpoint(sst2_run, sst2, tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(sst2_run["base_dir"])
    peft_model = PeftModel.from_pretrained(base, sst2_run["adapter_dir"]).eval()
    merged = merge_adapter(peft_model)
    assert type(merged) is GPT1ForSequenceClassification
    wrappers = (BaseTunerLayer, ModulesToSaveWrapper, TrainableTokensWrapper)
    assert not any(isinstance(m, wrappers) for m in merged.modules())
    assert merged.lm_head.weight is merged.transformer.tokens_embed.weight  # still tied
    assert_same_outputs(merged, sst2, sst2_run["reference"])

    merged.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt1"
    saved_keys = set(load_file(tmp_path / "model.safetensors"))
    assert saved_keys == set(sst2_run["before"]) - {"lm_head.weight"}  # plain layout; the tied head is not stored
    loaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert_same_outputs(loaded.eval(), sst2, sst2_run["reference"])


def test_full_embedding_alternative_keeps_the_lm_head_tied(tokenizer, sst2, tmp_path):
    model = tiny_model(GPT1ForSequenceClassification, tokenizer, num_labels=2)
    model.save_pretrained(tmp_path / "base")
    peft_model = make_peft_model(model, r=4, dropout=0.0, embeddings="full")
    report = trainable_parameter_report(peft_model)
    assert report["by_kind"]["modules_to_save"] == 40482 * 32 + 2 * 32 + 2  # whole table + head
    train(peft_model, sst2, steps=5)
    base = peft_model.get_base_model()
    assert torch.equal(base.lm_head.weight, base.transformer.tokens_embed.weight)  # the head reads the trained copy
    reference = outputs(peft_model, sst2)
    info = save_adapter(peft_model, tmp_path / "adapter")
    print(f"\nfull-embedding adapter: {info['adapter_bytes']:,} bytes")
    assert info["adapter_bytes"] > 40482 * 32 * 4  # the table is in the adapter: the heavier alternative
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert_same_outputs(reloaded.eval(), sst2, reference)
    merged = merge_adapter(reloaded)  # PEFT alone would leave two equal, untied tables here
    assert merged.config.tie_word_embeddings and merged.lm_head.weight is merged.transformer.tokens_embed.weight
    assert_same_outputs(merged, sst2, reference)


# ----------------------------------------------------------------------------------------------------------------------
# MRPC similarity, multiple choice, double heads
# ----------------------------------------------------------------------------------------------------------------------


def test_mrpc_similarity_adapter_trains_reloads_and_merges(tokenizer, mrpc, tmp_path):
    """lm_coef=0 here: without the auxiliary LM loss only rows that occur in the inputs get gradient, so exactly
    start/delimiter/extract move and the (attention-masked) pad row does not."""
    model = tiny_model(GPT1ForSequenceClassification, tokenizer, num_labels=2, lm_coef=0.0)
    model.save_pretrained(tmp_path / "base")
    initial_rows = model.get_input_embeddings().weight.detach().clone()
    peft_model = make_peft_model(model, r=8, dropout=0.0)
    assert mrpc["input_ids"].shape[:2] == (4, 2) and bool((mrpc["input_ids"] == 40481).any())  # padded
    first, last = train(peft_model, mrpc)
    assert last < 0.5 * first
    changed = (peft_model.get_input_embeddings().weight != initial_rows).any(-1).nonzero().flatten().tolist()
    assert changed == [40478, 40479, 40480]

    with torch.no_grad():
        reference = peft_model(**mrpc).logits
        swapped = peft_model(input_ids=mrpc["input_ids"].flip(1), attention_mask=mrpc["attention_mask"].flip(1)).logits
    assert (swapped - reference).abs().max() <= TOL  # similarity sums both orderings: order-free by construction
    save_adapter(peft_model, tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    for model in (reloaded.eval(), merge_adapter(reloaded)):
        with torch.no_grad():
            assert (model(**mrpc).logits - reference).abs().max() <= TOL


def test_multiple_choice_head_is_trained_saved_and_reloaded(tokenizer, story_cloze, tmp_path):
    model = tiny_model(GPT1ForMultipleChoice, tokenizer, lm_coef=0.0)
    model.save_pretrained(tmp_path / "base")
    score_before = model.score.weight.detach().clone()
    peft_model = make_peft_model(model, r=4, dropout=0.0)
    assert type(peft_model) is PeftModel  # no PEFT task type for multiple choice
    assert isinstance(peft_model.get_base_model().score, ModulesToSaveWrapper)
    first, last = train(peft_model, story_cloze, steps=12)
    assert last < first
    assert not torch.equal(peft_model.get_base_model().score.modules_to_save["default"].weight, score_before)
    assert torch.equal(peft_model.get_base_model().score.original_module.weight, score_before)

    with torch.no_grad():
        reference = peft_model(**story_cloze).logits
    save_adapter(peft_model, tmp_path / "adapter", base_model_name_or_path=tmp_path / "base")
    assert "base_model.model.score.weight" in load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    reloaded = PeftModel.from_pretrained(GPT1ForMultipleChoice.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    # AutoPeftModel finds GPT1ForMultipleChoice through the adapter config's auto_mapping
    auto = AutoPeftModel.from_pretrained(tmp_path / "adapter", import_allowlist=["hf_gpt1"])
    assert type(auto.get_base_model()) is GPT1ForMultipleChoice
    for model in (reloaded.eval(), auto.eval(), merge_adapter(auto)):
        with torch.no_grad():
            assert (model(**story_cloze).logits - reference).abs().max() <= TOL


def test_double_heads_multiple_choice_head_is_trained_and_saved(tokenizer, story_cloze, tmp_path):
    model = tiny_model(GPT1DoubleHeadsModel, tokenizer)
    model.save_pretrained(tmp_path / "base")
    summary_before = model.multiple_choice_head.summary.weight.detach().clone()
    peft_model = make_peft_model(model, r=4, dropout=0.0)
    stories = {k: v[:2] for k, v in story_cloze.items()}  # this head projects every position onto the vocabulary
    last_token = stories["attention_mask"].sum(-1) - 1  # the extract token of each sequence
    batch = dict(
        input_ids=stories["input_ids"],
        attention_mask=stories["attention_mask"],
        mc_token_ids=last_token,
        mc_labels=stories["labels"],
    )
    first, last = train(peft_model, batch, steps=8, loss_key="mc_loss")
    assert last < first
    head = peft_model.get_base_model().multiple_choice_head
    assert isinstance(head, ModulesToSaveWrapper)
    assert not torch.equal(head.modules_to_save["default"].summary.weight, summary_before)

    with torch.no_grad():
        reference = peft_model(**batch)
    save_adapter(peft_model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert "base_model.model.multiple_choice_head.summary.weight" in saved
    base = GPT1DoubleHeadsModel.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        out = reloaded(**batch)
    assert (out.mc_logits - reference.mc_logits).abs().max() <= TOL
    assert (out.logits - reference.logits).abs().max() <= TOL


# ----------------------------------------------------------------------------------------------------------------------
# Causal LM: generate with the KV cache
# ----------------------------------------------------------------------------------------------------------------------


def test_causal_lm_lora_trains_and_generates_with_kv_cache(tokenizer, sst2):
    model = tiny_model(GPT1ForCausalLM, tokenizer)
    peft_model = make_peft_model(model, r=8, dropout=0.0)
    assert infer_task(model) == "causal_lm" and peft_model.peft_config["default"].task_type == "CAUSAL_LM"
    lm_batch = dict(
        input_ids=sst2["input_ids"],
        attention_mask=sst2["attention_mask"],
        labels=sst2["input_ids"].masked_fill(sst2["attention_mask"] == 0, -100),
    )
    first, last = train(peft_model, lm_batch, lr=1e-2)
    print(f"\ncausal LM loss {first:.3f} -> {last:.3f}")
    assert last < first - 0.3  # nats; the LM loss over 40,482 tokens moves slowly with a width-32 LoRA

    # two prompts of different length, left-padded: `_start_ text`
    prompts = [sst2["input_ids"][i][sst2["attention_mask"][i] == 1][:-1][:6] for i in (0, 1)]
    prompts[1] = prompts[1][:4]
    width = max(len(p) for p in prompts)
    pad = model.config.pad_token_id
    input_ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p]) for p in prompts])
    attention_mask = (torch.arange(width) >= (width - torch.tensor([len(p) for p in prompts]))[:, None]).long()
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False)

    cached = peft_model.generate(**kwargs, use_cache=True, return_dict_in_generate=True, output_scores=True)
    uncached = peft_model.generate(**kwargs, use_cache=False, return_dict_in_generate=True, output_scores=True)
    assert cached.sequences.shape == (2, width + 8)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores):
        assert (a - b).abs().max() <= 1e-4
    with torch.no_grad():
        adapted = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert (adapted - plain).abs().max() > 1e-2  # the adapter is live during generation

    merged = merge_adapter(peft_model)
    assert type(merged) is GPT1ForCausalLM and merged.lm_head.weight is merged.transformer.tokens_embed.weight
    assert torch.equal(merged.generate(**kwargs, use_cache=True), cached.sequences)


# ----------------------------------------------------------------------------------------------------------------------
# Activation checkpointing
# ----------------------------------------------------------------------------------------------------------------------


def _one_step_grads(tokenizer, batch, embeddings, checkpointing):
    model = tiny_model(GPT1ForSequenceClassification, tokenizer, num_labels=2)
    torch.manual_seed(0)
    peft_model = make_peft_model(
        model, r=4, dropout=0.0, embeddings=embeddings, activation_checkpointing=checkpointing, init_lora_weights=False
    )  # random B too: every LoRA matrix gets a gradient at once
    calls = []
    peft_model.get_base_model().transformer.h[0].attn.register_forward_hook(lambda *args: calls.append(1))
    peft_model.train()
    peft_model(**batch).loss.backward()
    grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad and p.grad is not None}
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    return grads, trainable, len(calls), peft_model


@pytest.mark.parametrize(
    "embeddings, checkpointing",
    [("tokens", True), ("none", {"use_reentrant": True})],
    ids=["non-reentrant+tokens", "reentrant+frozen-embeddings"],
)
def test_activation_checkpointing_gives_the_same_gradients(tokenizer, sst2, embeddings, checkpointing):
    """Reentrant checkpointing with frozen embeddings is the case that needs PEFT's enable_input_require_grads:
    without it no block input requires grad and the LoRA weights would get no gradient at all."""
    batch = {k: v[:4] for k, v in sst2.items()}
    ref_grads, trainable, ref_calls, _ = _one_step_grads(tokenizer, batch, embeddings, False)
    grads, trainable_ckpt, calls, peft_model = _one_step_grads(tokenizer, batch, embeddings, checkpointing)
    assert peft_model.get_base_model().is_activation_checkpointing
    assert (ref_calls, calls) == (1, 2)  # the block really was recomputed in backward
    assert set(grads) == set(ref_grads) == trainable == trainable_ckpt
    for name, grad in ref_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
