"""Unit tests of hf_gpt1.pretraining_output: output-folder rules and run identity, resuming 0.1's checkpoints, atomic
final saves (model, LoRA adapter, merged model) with a real Accelerator on CPU, and the log.jsonl log. Real files in
tmp_path; no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_gpt1 import pretraining as pt
from hf_gpt1 import pretraining_output
from testing_utils import assert_modes_follow_umask
from testing_utils import tiny_pretraining_model as _tiny_model

# ----------------------------------------------------------------------------------------------------------------------
# Output folder rules and run identity
# ----------------------------------------------------------------------------------------------------------------------


def _identity(**changes) -> pretraining_output.RunIdentity:
    values = dict(
        model_type="gpt1",
        model_config={"n_layer": 2, "n_embd": 16},
        init_from=None,
        corpus="c0",
        tokenizer="t0",
        text_pipeline="1/standardize=True",
        block_size=32,
        val_fraction=0.1,
        seed=1,
        batch_size=4,
        gradient_accumulation_steps=1,
        num_processes=1,
    )
    values.update(changes)
    return pretraining_output.RunIdentity(**values)


def test_lora_settings_are_part_of_the_run_identity():
    from hf_gpt1.peft_integration import LORA_TARGET_MODULES

    default = pt.lora_settings()
    assert default == {
        "method": "lora",
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": sorted(LORA_TARGET_MODULES),
        "embeddings": "none",
    }
    # the order and repetition of --lora-target-modules do not make another adapter
    assert pt.lora_settings(target_modules=["c_fc", "c_attn", "c_fc"]) == pt.lora_settings(
        target_modules=["c_attn", "c_fc"]
    )
    assert pt.lora_settings(target_modules=list(reversed(LORA_TARGET_MODULES))) == default
    with pytest.raises(pt.PretrainingError, match="--lora-r must be a positive integer"):
        pt.lora_settings(r=0)
    with pytest.raises(pt.PretrainingError, match=r"--lora-dropout must be in \[0, 1\)"):
        pt.lora_settings(dropout=1.0)

    lora = _identity(peft=default)
    assert _identity().differences(lora.to_dict())[0].startswith("peft: {'method': 'lora'")
    assert lora.differences(_identity(peft=pt.lora_settings(r=4)).to_dict())  # another rank: not the same run
    old_run_file = {k: v for k, v in _identity().to_dict().items() if k != "peft"}  # written before LoRA existed
    assert _identity().differences(old_run_file) == []


def test_check_output_dir_rules(tmp_path):
    out = tmp_path / "run"
    assert pretraining_output.check_output_dir(out, _identity(), resume=None, overwrite=False).resume_checkpoint is None
    assert (
        pretraining_output.check_output_dir(out, _identity(), resume="auto", overwrite=False).resume_checkpoint is None
    )

    out.mkdir()
    (out / pretraining_output.RUN_FILE).write_text(json.dumps(_identity().to_dict()), encoding="utf-8")
    checkpoint = out / "checkpoint-20"
    checkpoint.mkdir()
    (checkpoint / pretraining_output.STATE_FILE).write_text(
        json.dumps({"step": 20, "identity": _identity().to_dict()}), encoding="utf-8"
    )
    (out / "checkpoint-30.tmp").mkdir()  # an interrupted save is never picked

    with pytest.raises(
        pretraining_output.OutputDirError, match="already holds a pretraining run .*checkpoint-20.*--resume auto"
    ):
        pretraining_output.check_output_dir(out, _identity(), resume=None, overwrite=False)
    plan = pretraining_output.check_output_dir(out, _identity(), resume="auto", overwrite=False)
    assert plan.resume_checkpoint == checkpoint
    with pytest.raises(pretraining_output.OutputDirError) as error:
        pretraining_output.check_output_dir(
            out, _identity(corpus="c1", model_config={"n_layer": 3, "n_embd": 16}), resume="auto", overwrite=False
        )
    assert "corpus: 'c0' -> 'c1'" in str(error.value) and "n_layer 2 -> 3" in str(error.value)
    assert pretraining_output.check_output_dir(out, _identity(corpus="c1"), resume=None, overwrite=True).clean
    with pytest.raises(pretraining_output.OutputDirError, match="contradict"):
        pretraining_output.check_output_dir(out, _identity(), resume="auto", overwrite=True)


def test_a_checkpoint_of_the_old_accelerate_loop_is_resumable(tmp_path):
    """0.1 wrote `accelerator.save_state` folders (no trainer_state.json, optimizer.bin, random_states_*.pkl): the plan
    resumes them like any other (`pretraining_run` upgrades them first; tests/hf_gpt1/test_pretraining_run.py)."""
    out = tmp_path / "run"
    checkpoint = out / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (out / pretraining_output.RUN_FILE).write_text(json.dumps(_identity().to_dict()), encoding="utf-8")
    (checkpoint / pretraining_output.STATE_FILE).write_text(
        json.dumps({"step": 20, "identity": _identity().to_dict()}), encoding="utf-8"
    )
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"):
        (checkpoint / name).write_bytes(b"")
    for resume in ("auto", str(checkpoint)):
        plan = pretraining_output.check_output_dir(out, _identity(), resume=resume, overwrite=False)
        assert plan.resume_checkpoint == checkpoint and pretraining_output.is_accelerate_checkpoint(checkpoint)
    (checkpoint / pretraining_output.TRAINER_STATE_FILE).write_text("{}", encoding="utf-8")
    assert not pretraining_output.is_accelerate_checkpoint(checkpoint)


def test_foreign_checkpoint_in_output_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    for resume in (None, "auto"):
        with pytest.raises(
            pretraining_output.OutputDirError, match=r"holds a model checkpoint \(config.json, model_type='bert'\)"
        ):
            pretraining_output.check_output_dir(out, _identity(), resume=resume, overwrite=False)
    assert pretraining_output.check_output_dir(out, _identity(), resume=None, overwrite=True).clean
    with pytest.raises(pretraining_output.OutputDirError, match="not a pretrain.py checkpoint"):
        pretraining_output.check_output_dir(out, _identity(), resume=str(out), overwrite=False)


def test_clean_output_dir_keeps_data_cache_and_unrelated_files(tmp_path):
    out = tmp_path / "run"
    for name in ("checkpoint-5", "data-cache", "runs", "tensorboard"):
        (out / name).mkdir(parents=True)
    for name in (
        pretraining_output.RUN_FILE,
        pretraining_output.LOG_FILE,
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "notes.txt",
        "modeling_gpt1.py",
        "configuration_gpt1.py",
        "my_script.py",
    ):
        (out / name).write_text("{}", encoding="utf-8")
    pretraining_output.clean_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["data-cache", "my_script.py", "notes.txt"]


# ----------------------------------------------------------------------------------------------------------------------
# Final model (real Accelerator on CPU); interrupted saves
# ----------------------------------------------------------------------------------------------------------------------


def test_stale_temporaries_of_interrupted_saves_are_removed(tmp_path):
    out = tmp_path / "run"
    stale = ("_checkpoint-staging/checkpoint-4", "checkpoint-3.tmp", "checkpoint-5.upgrade", ".final-123")
    for name in (*stale, "checkpoint-2", "data-cache"):
        (out / name).mkdir(parents=True)
    pretraining_output.remove_stale_temporaries(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "data-cache"]


def test_final_model_is_loadable_with_auto_classes(tmp_path, accelerator, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = accelerator.prepare(_tiny_model(tokenizer))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "gpt1", "stale": True}), encoding="utf-8")
    pretraining_output.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert "stale" not in json.loads((out / "config.json").read_text())
    assert not list(out.glob(".final-*"))
    assert_modes_follow_umask(out)  # weights as readable as config.json (safetensors alone: 0600)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in accelerator.unwrap_model(model).state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert len(AutoTokenizer.from_pretrained(out)) == len(tokenizer)


def test_final_model_save_drops_a_card_rendered_for_the_previous_model(tmp_path, accelerator, tokenizer):
    """A README.md that a push rendered describes the model being replaced (the next push renders a new one); a
    hand-written README stays."""
    model = accelerator.prepare(_tiny_model(tokenizer))
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("---\ntags:\n- gpt1\n- hf-gpt1\n---\n# old metrics\n", encoding="utf-8")
    pretraining_output.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert not (out / "README.md").exists()
    (out / "README.md").write_text("# My notes\n", encoding="utf-8")
    pretraining_output.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert (out / "README.md").read_text(encoding="utf-8") == "# My notes\n"


# ----------------------------------------------------------------------------------------------------------------------
# LoRA outputs: atomic adapter / merged-model saves, and their removal by --overwrite
# ----------------------------------------------------------------------------------------------------------------------


def _trained_lora_model(tokenizer, base_dir: Path):
    """A tiny GPT-1 saved as the base, wrapped in LoRA with non-zero adapter weights (as after training)."""
    from hf_gpt1.tokenization_gpt1 import add_special_tokens

    model = _tiny_model(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    add_special_tokens(model, tokenizer)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model = pt.apply_lora(model, pt.lora_settings(r=4, dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return peft_model.eval()


def test_final_adapter_and_merged_model_reproduce_the_trained_model(tmp_path, accelerator, tokenizer):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from hf_gpt1 import GPT1ForCausalLM

    peft_model = _trained_lora_model(tokenizer, tmp_path / "base")
    ids = torch.randint(0, 40478, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    prepared = accelerator.prepare(peft_model)
    out = tmp_path / "run"
    out.mkdir()
    (out / pretraining_output.RUN_FILE).write_text("{}", encoding="utf-8")

    info = pretraining_output.save_final_adapter_atomically(
        accelerator, prepared, tokenizer, out, base_model_name_or_path=str(tmp_path / "base")
    )
    assert info["path"] == str(out) and 0 < info["adapter_bytes"] < 100_000
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "config.json").exists() and not list(out.glob(".final-*"))
    assert_modes_follow_umask(out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    assert all("lora_" in name for name in load_file(out / "adapter_model.safetensors"))  # no embedding, no head
    reloaded = PeftModel.from_pretrained(GPT1ForCausalLM.from_pretrained(tmp_path / "base"), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=0, atol=0)

    for _ in range(2):  # the second save swaps the complete folder for a new one
        merged_dir = pretraining_output.save_merged_model_atomically(
            accelerator,
            prepared,
            tokenizer,
            out / pt.MERGED_DIR,
            extra_files=[out / pretraining_output.RUN_FILE, out / pretraining_output.LOG_FILE],
        )
    assert merged_dir == out / pt.MERGED_DIR
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporaries left behind
    assert_modes_follow_umask(merged_dir)
    assert (merged_dir / pretraining_output.RUN_FILE).is_file() and not (
        merged_dir / pretraining_output.LOG_FILE
    ).exists()  # missing extras skipped
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert type(merged).__name__ == "GPT1ForCausalLM" and "auto_map" in json.loads(
        (merged_dir / "config.json").read_text()
    )
    assert merged.lm_head.weight.data_ptr() == merged.transformer.tokens_embed.weight.data_ptr()  # still tied
    assert not any("lora" in name for name in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


def test_clean_output_dir_removes_lora_outputs_and_generated_cards(tmp_path):
    out = tmp_path / "run"
    (out / pt.MERGED_DIR).mkdir(parents=True)
    (out / pt.MERGED_DIR / "config.json").write_text("{}", encoding="utf-8")
    for name in ("adapter_config.json", "adapter_model.safetensors", pretraining_output.RUN_FILE):
        (out / name).write_text("{}", encoding="utf-8")
    (out / "README.md").write_text("---\nlibrary_name: peft\nbase_model: /x\n---\n# Model Card\n", encoding="utf-8")
    pretraining_output.clean_output_dir(out)
    assert list(out.iterdir()) == []
    (out / "README.md").write_text("---\nlicense: mit\n---\n# My experiment\n", encoding="utf-8")
    pretraining_output.clean_output_dir(out)
    assert [p.name for p in out.iterdir()] == ["README.md"]  # the user's own card is not ours to delete


# ----------------------------------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------------------------------


def test_jsonl_log_truncates_on_resume(tmp_path):
    log = pretraining_output.JsonlLog(tmp_path / pretraining_output.LOG_FILE)
    log.write({"step": 0, "val_loss": 10.0})
    for step in range(1, 11):
        log.write({"step": step, "train_loss": 10.0 - step * 0.3})
    log.write({"step": 10, "val_loss": 7.5})
    with (tmp_path / pretraining_output.LOG_FILE).open("a") as handle:
        handle.write('{"step": 11, "train_lo')  # a line cut by SIGKILL
    log.truncate_after(6)
    records = pretraining_output.read_jsonl(tmp_path / pretraining_output.LOG_FILE)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
