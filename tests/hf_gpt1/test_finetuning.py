"""hf_gpt1.finetuning: the paper's recipe as Trainer settings, head selection, the GPT1Trainer, checkpoint safety,
model card, GLUE submission files and pipeline use of saved checkpoints; --peft (only the adapter trains, the saved
adapter / AutoPeft / merged model reproduce the run, best-checkpoint reload and resume), the NaN/inf-loss stop, and a
failed --push-to-hub upload.

Everything runs in-process with the real Trainer on real data (the shared GLUE / Story Cloze files) and a tiny
randomly initialised GPT-1 saved to a temporary folder. The end-to-end CLI runs are in tests/scripts/test_finetune.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset
from transformers import TrainerCallback, TrainingArguments, pipeline

import hf_gpt1
import task_adapters as ta
from hf_gpt1 import (
    GPT1Config,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    load_gpt1_tokenizer,
)
from hf_gpt1 import finetuning as ft
from hf_gpt1.cpu_speed import cpu_speedups_enabled
from hf_gpt1.trainer import longest_sequence_lengths
from hf_gpt1.training_args import GPT1TrainingArguments
from testing_utils import assert_modes_follow_umask

TINY = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128)


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two cores shared by several test processes: OpenMP threads that wait on each other under contention make a
    tiny model's step ~30x slower than one thread does."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_gpt1_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A randomly initialised tiny GPT-1 LM (the released 40,478-token vocabulary) saved with its tokenizer."""
    path = tmp_path_factory.mktemp("tiny-gpt1")
    torch.manual_seed(0)
    GPT1ForCausalLM(GPT1Config(**TINY)).save_pretrained(path)
    load_gpt1_tokenizer(tokenizer_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_gpt1_tokenizer(tokenizer_dir)


def _no_dropout_model(tiny_gpt1_dir, tokenizer, task="sst2", lm_coef=0.5):
    spec = ta.get_task_spec(task)
    model = ft.load_model_for_task(str(tiny_gpt1_dir), spec, tokenizer, lm_coef=lm_coef, clf_dropout=0.0, seed=0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attn_pdrop"):  # attention-probability dropout is a float read at call time
            module.attn_pdrop = 0.0
    model.config.update(dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return model


def _encoded_sst2(glue_dir, tokenizer, n: int, max_length: int, split: str = "train", start: int = 0) -> Dataset:
    data = ta.load_task("sst2", data_dir=glue_dir)[split]
    return ta.get_adapter("sst2").encode(data.select(range(start, start + n)), tokenizer, max_length)


def _args(output_dir, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        label_names=["labels"],
        seed=0,
        logging_steps=1,
        use_cpu=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


# ----------------------------------------------------------------------------------------------------------------------
# The recipe: defaults, overrides, decay groups
# ----------------------------------------------------------------------------------------------------------------------


def test_cli_defaults_are_the_papers_and_reach_training_arguments(tmp_path):
    args = ft.parse_args(["--task", "sst2", "--model", "m", "--output-dir", str(tmp_path)])
    training = args.training
    assert isinstance(training, GPT1TrainingArguments) and isinstance(training, TrainingArguments)
    assert (training.learning_rate, training.per_device_train_batch_size, training.num_train_epochs) == (6.25e-5, 32, 3)
    assert (training.warmup_steps, training.weight_decay, training.max_grad_norm) == (0.002, 0.01, 1.0)
    assert (args.model.clf_dropout, args.model.lm_coef) == (0.1, 0.5)
    assert args.data.max_length is None  # None = 512 capped at n_positions
    training = ft.schedule_training_arguments(training, ta.get_task_spec("sst2"), ["validation"])
    assert training.learning_rate == 6.25e-5 and training.per_device_train_batch_size == 32
    assert training.num_train_epochs == 3.0 and training.warmup_steps == 0.002
    assert training.get_warmup_steps(10_000) == 20  # 0.2 % of the steps
    assert str(training.lr_scheduler_type.value) == "linear" and training.weight_decay == 0.01
    assert training.max_grad_norm == 1.0 and training.label_names == ["labels"]
    assert training.eval_strategy == "epoch" and training.save_strategy == "epoch"
    assert training.load_best_model_at_end and training.metric_for_best_model == "accuracy"

    args = ft.parse_args(
        [
            "--task",
            "mrpc",
            "--model",
            "m",
            "--output-dir",
            str(tmp_path),
            "--lm-coef",
            "0",
            "--clf-dropout",
            "0.2",
            "--learning-rate",
            "1e-4",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--warmup-ratio",
            "0.1",
            "--weight-decay",
            "0",
            "--save-steps",
            "10",
            "--gradient-accumulation-steps",
            "4",
        ]
    )
    assert (args.model.lm_coef, args.model.clf_dropout) == (0.0, 0.2)
    training = ft.schedule_training_arguments(args.training, ta.get_task_spec("mrpc"), ["validation"])
    assert (training.learning_rate, training.per_device_train_batch_size, training.num_train_epochs) == (1e-4, 8, 2.0)
    assert training.warmup_steps == 0.1 and training.weight_decay == 0 and training.gradient_accumulation_steps == 4
    # step-wise saving brings evaluation along (the best checkpoint needs a metric at every save)
    assert (training.save_strategy, training.save_steps, training.eval_strategy, training.eval_steps) == (
        "steps",
        10,
        "steps",
        10,
    )
    assert training.metric_for_best_model == "f1"


def test_cli_is_hf_argument_parser_dataclasses(tmp_path, capsys):
    """Every TrainingArguments option is an option under its own name (either spelling); the argparse CLI's old
    spellings keep working (aliases, `--no-load-best-model`, bare `--resume-from-checkpoint`); unknown flags and
    out-of-range values are usage errors (exit 2) naming the flag."""
    base = ["--task", "sst2", "--model", "m", "--output-dir", str(tmp_path)]
    args = ft.parse_args(
        base
        + [
            "--lr_scheduler_type",
            "cosine",
            "--adam-beta2",
            "0.98",
            "--dataloader_num_workers",
            "1",
            "--bf16",
            "--use-cpu",
            "--use-cpu",
        ]
    )
    assert (str(args.training.lr_scheduler_type.value), args.training.adam_beta2) == ("cosine", 0.98)
    assert args.training.dataloader_num_workers == 1 and args.training.bf16
    new = ft.parse_args(base + ["--per_device_train_batch_size", "8", "--num-train-epochs", "2"]).training
    old = ft.parse_args(base + ["--batch-size", "8", "--epochs", "2"]).training
    assert (new.per_device_train_batch_size, new.num_train_epochs) == (old.per_device_train_batch_size, 2) == (8, 2)
    assert old.per_device_eval_batch_size == 8  # follows the train batch size unless given
    assert not ft.parse_args(base + ["--no-load-best-model"]).training.load_best_model_at_end
    assert ft.parse_args(base + ["--resume-from-checkpoint", "--use-cpu"]).training.resume_from_checkpoint == "auto"
    assert ft.parse_args(base + ["--split-validation"]).data.split_validation == "recipe"
    assert ft.parse_args(base + ["--split-validation", "0.1"]).data.split_validation == "0.1"
    for extra, message in [
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag 1"),
        (["--learning-rate", "0"], "--learning-rate must be > 0"),
        (["--warmup-ratio", "2"], "--warmup-ratio must be in [0, 1)"),
        (["--eval-strategy", "sometimes"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            ft.parse_args(base + extra)
        assert stopped.value.code == 2 and message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit):
        ft.parse_args(["--task", "sst2", "--model", "m"])  # --output-dir is required
    assert "--output_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        ft.parse_args(["--help"])
    assert stopped.value.code == 0 and "--lm_coef" in capsys.readouterr().out  # every help text formats


def test_texts_are_standardized_unless_switched_off(tokenizer, glue_dir, tmp_path):
    """MRPC's sentences have curly quotes and dashes the GPT-1 BPE lacks: by default they reach the model as ASCII
    (as in the original code), with --no-standardize-text as `<unk>`s."""
    base = ["--task", "mrpc", "--model", "m", "--output-dir", str(tmp_path), "--data-dir", str(glue_dir)]
    spec, adapter, unk = ta.get_task_spec("mrpc"), ta.get_adapter("mrpc"), tokenizer.unk_token_id
    unks = {}
    for flag in ([], ["--no-standardize-text"]):
        args = ft.parse_args(base + flag)
        assert args.data.standardize_text is not bool(flag)
        train, evaluation, _, _ = ft.prepare_datasets(args.data, spec, adapter, tokenizer, 128)
        sequences = [*train["input_ids"], *evaluation["input_ids"]]
        unks[bool(flag)] = sum(int(np.count_nonzero(np.asarray(ids) == unk)) for ids in sequences)
    assert unks[True] - unks[False] > 100, unks  # (the few left are characters standardization does not map)


@pytest.mark.parametrize(
    "task, eval_names, expected",
    [
        ("sst2", ["validation"], "accuracy"),
        ("cola", ["validation"], "matthews_correlation"),
        ("mrpc", ["validation"], "f1"),
        ("stsb", ["validation"], "pearson"),
        ("story_cloze", ["validation"], "accuracy"),
        ("mnli", ["matched", "mismatched"], "matched_accuracy"),
    ],
)
def test_metric_for_best_model_per_task(task, eval_names, expected):
    assert ft.metric_for_best_model(ta.get_task_spec(task), eval_names) == expected


def test_weight_decay_skips_exactly_biases_and_layernorm_gains(tiny_gpt1_dir, tokenizer, tmp_path):
    """The original train.py decays every parameter with more than one dimension; Trainer's grouping (by LayerNorm
    type and 'bias' in the name) must pick the same set for our module names (ln_1, ln_2, c_attn, ...)."""
    model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("sst2"), tokenizer)
    trainer = ft.GPT1Trainer(model=model, args=_args(tmp_path, weight_decay=0.01))
    named = dict(model.named_parameters())
    decayed = set(trainer.get_decay_parameter_names(model)) & set(named)
    assert decayed == {name for name, p in named.items() if p.dim() > 1}
    assert not any(".ln_" in n or n.endswith("bias") for n in decayed)
    assert {"transformer.h.0.ln_1.weight", "transformer.h.1.ln_2.weight"}.isdisjoint(decayed)
    assert {"transformer.tokens_embed.weight", "transformer.positions_embed.weight", "score.weight"} <= decayed
    optimizer = trainer.create_optimizer()
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay[0.01] == {id(named[n]) for n in decayed}
    assert by_decay[0.0] == {id(p) for n, p in named.items() if n not in decayed}


# ----------------------------------------------------------------------------------------------------------------------
# Model loading: head per family, labels, special tokens, clear errors
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, head, num_labels, problem_type",
    [
        ("sst2", GPT1ForSequenceClassification, 2, "single_label_classification"),
        ("qnli", GPT1ForSequenceClassification, 2, "single_label_classification"),
        ("mnli", GPT1ForSequenceClassification, 3, "single_label_classification"),
        ("stsb", GPT1ForSequenceClassification, 1, "regression"),
        ("story_cloze", GPT1ForMultipleChoice, None, None),
    ],
)
def test_head_follows_task_family(tiny_gpt1_dir, tokenizer, task, head, num_labels, problem_type):
    spec = ta.get_task_spec(task)
    model = ft.load_model_for_task(str(tiny_gpt1_dir), spec, tokenizer, lm_coef=0.25, clf_dropout=0.3, seed=1)
    assert type(model) is head
    assert model.config.lm_coef == 0.25 and model.config.clf_pdrop == 0.3 and model.clf_dropout.p == 0.3
    # hf-gpt1's CPU speed paths (HF_GPT1_CPU_SPEEDUPS=0 turns them off), applied after the embeddings were resized
    assert model.config._attn_implementation == "gpt1_fused" and cpu_speedups_enabled(model)
    assert model.lm_head.__dict__["tied_embedding"] is model.transformer.tokens_embed
    assert model.config.finetuning_task == spec.name
    # the four GPT-1 tokens were appended and recorded
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 40482
    assert (
        model.config.start_token_id,
        model.config.delimiter_token_id,
        model.config.extract_token_id,
        model.config.pad_token_id,
    ) == (40478, 40479, 40480, 40481)
    if num_labels is not None:
        assert model.config.num_labels == num_labels and model.config.problem_type == problem_type
        if problem_type == "regression":
            assert model.config.id2label == {0: "score"}
        else:
            assert list(model.config.id2label.values()) == list(spec.label_names)


def test_new_embeddings_are_random_and_seeded(tiny_gpt1_dir, tokenizer):
    spec = ta.get_task_spec("sst2")
    a = ft.load_model_for_task(str(tiny_gpt1_dir), spec, tokenizer, seed=3).get_input_embeddings().weight[40478:]
    b = ft.load_model_for_task(str(tiny_gpt1_dir), spec, tokenizer, seed=3).get_input_embeddings().weight[40478:]
    c = ft.load_model_for_task(str(tiny_gpt1_dir), spec, tokenizer, seed=4).get_input_embeddings().weight[40478:]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.01 < a.std().item() < 0.03  # N(0, 0.02), the paper's init; not the mean of the trained rows


def test_openai_gpt_checkpoint_is_converted(tmp_path, tokenizer):
    from transformers import OpenAIGPTLMHeadModel

    from testing_utils import save_reference, tiny_openai_config

    save_reference(OpenAIGPTLMHeadModel, tiny_openai_config(vocab_size=40478, n_positions=64), tmp_path / "oa")
    model = ft.load_model_for_task(str(tmp_path / "oa"), ta.get_task_spec("rte"), tokenizer, seed=0)
    assert type(model) is GPT1ForSequenceClassification and model.config.model_type == "gpt1"
    assert model.config.num_labels == 2 and model.get_input_embeddings().num_embeddings == 40482


def test_clear_errors_for_bad_input(tmp_path, tiny_gpt1_dir, glue_dir, tokenizer_dir, capsys):
    def run(*extra):
        return ft.main(["--output-dir", str(tmp_path / "out"), *extra])

    assert run("--task", "no_such_task", "--model", str(tiny_gpt1_dir)) == 2
    err = capsys.readouterr().err
    assert "unknown task 'no_such_task'" in err and "sst2" in err and "story_cloze" in err

    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    assert run("--task", "sst2", "--model", str(tmp_path / "gpt2"), "--tokenizer", str(tiny_gpt1_dir)) == 2
    assert "is a 'gpt2' model" in capsys.readouterr().err

    other = tmp_path / "gpt2-tokenizer"  # GPT-2 ships the same file names with another BPE: must be refused
    other.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (other / name).write_bytes((tokenizer_dir / name).read_bytes())
    (other / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    assert run("--task", "sst2", "--model", str(tiny_gpt1_dir), "--tokenizer", str(other)) == 2
    assert "GPT2Tokenizer" in capsys.readouterr().err

    # QNLI has only its dev file here: the error says how to proceed
    assert run("--task", "qnli", "--model", str(tiny_gpt1_dir), "--data-dir", str(glue_dir)) == 2
    assert "--split-validation" in capsys.readouterr().err

    assert (
        run("--task", "sst2", "--model", str(tiny_gpt1_dir), "--data-dir", str(glue_dir), "--max-length", "4096") == 2
    )
    assert "n_positions" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        ft.parse_args(["--task", "sst2", "--model", "m", "--output-dir", "o", "--warmup-ratio", "2"])


# ----------------------------------------------------------------------------------------------------------------------
# GPT1Trainer: loss normalisation, logged loss parts, no LM logits gathered
# ----------------------------------------------------------------------------------------------------------------------


def _one_sgd_step(model, dataset, tmp_path, batch_size: int, accumulation: int, tokenizer):
    """One optimizer step of plain SGD (Adam's first step is ~lr·sign(g), blind to a wrong loss scale) without
    clipping (it would normalise a wrong scale away)."""
    args = _args(
        tmp_path / f"b{batch_size}x{accumulation}",
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
    )
    trainer = ft.GPT1Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=ta.GPT1DataCollator(tokenizer)
    )
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}, trainer


@pytest.mark.parametrize("lm_coef", [0.0, 0.5])
def test_gradient_accumulation_matches_the_large_batch(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path, lm_coef):
    """accumulation 2 × batch 4 gives the same SGD update as batch 8 (dropout off).

    The task loss is a mean over examples, so equal micro-batches reproduce the big batch exactly. The auxiliary LM
    loss is a mean over *tokens* of each micro-batch, so for λ > 0 we use sequences of equal length (truncated to 12
    tokens), where both means agree; with unequal lengths the micro-batch means weight tokens slightly differently.
    """
    if lm_coef:
        data = ta.load_task("sst2", data_dir=glue_dir)["validation"].select(range(40))
        dataset = ta.get_adapter("sst2").encode(data, tokenizer, 12)
        dataset = dataset.filter(lambda row: len(row["input_ids"]) == 12).select(range(8))
    else:
        dataset = _encoded_sst2(glue_dir, tokenizer, 8, 64, split="validation")
        assert len({len(x) for x in dataset["input_ids"]}) > 1  # really variable lengths
    before = {
        n: p.detach().clone()
        for n, p in _no_dropout_model(tiny_gpt1_dir, tokenizer, lm_coef=lm_coef).named_parameters()
    }
    big, trainer = _one_sgd_step(
        _no_dropout_model(tiny_gpt1_dir, tokenizer, lm_coef=lm_coef), dataset, tmp_path, 8, 1, tokenizer
    )
    accumulated, _ = _one_sgd_step(
        _no_dropout_model(tiny_gpt1_dir, tokenizer, lm_coef=lm_coef), dataset, tmp_path, 4, 2, tokenizer
    )
    moved = max((big[n] - before[n]).abs().max().item() for n in big)
    assert moved > 1e-3  # the step did something
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-5, atol=1e-6, msg=name)
    logged = [e for e in trainer.state.log_history if "loss" in e][0]
    assert ("lm_loss" in logged) == (lm_coef > 0)


def _padded_tokens(trainer) -> int:
    return sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())


@pytest.mark.parametrize("strategy", ["group_by_length", "batch_rebalance"])
def test_length_aware_batches_of_pairs_group_by_their_longest_sequence(
    tiny_gpt1_dir, tokenizer, glue_dir, tmp_path, strategy
):
    """MRPC examples are nested (both orderings of a pair). Trainer's own samplers read len(input_ids) = 2 for every
    one of them and so draw batches at random; GPT1Trainer gives them each pair's longest sequence, the length the
    collator pads the whole batch to. Every example is still drawn once per epoch, and the dataset the batches come
    from keeps its columns. Single sequences and a user's own length column go to Trainer unchanged."""
    data = ta.load_task("mrpc", data_dir=glue_dir)["train"].select(range(512))  # sorted within 128 (8 batches)
    pairs = ta.get_adapter("mrpc").encode(data, tokenizer, 128)
    longest = [max(len(seq) for seq in pair) for pair in pairs["input_ids"]]
    assert len(pairs[0]["input_ids"]) == 2 and len(set(longest)) > 20  # nested, and lengths that vary
    assert longest_sequence_lengths(pairs) == longest

    def trainer(sampling: str):
        model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("mrpc"), tokenizer, seed=0)
        args = _args(tmp_path / sampling, per_device_train_batch_size=16, train_sampling_strategy=sampling)
        return ft.GPT1Trainer(model=model, args=args, train_dataset=pairs, data_collator=ta.GPT1DataCollator(tokenizer))

    grouped, shuffled = trainer(strategy), trainer("random")
    sampler = grouped._get_train_sampler()
    assert list(sampler.lengths) == longest
    drawn = [i for item in sampler for i in (item if isinstance(item, list) else [item])]  # rebalance yields batches
    assert sorted(drawn) == list(range(len(pairs)))  # nothing dropped or repeated
    if strategy == "group_by_length":  # (batch_rebalance only balances one step's micro-batches across processes)
        # the random order pads most batches to a long pair; grouped batches hold pairs of similar length
        real = 2 * sum(longest)
        assert _padded_tokens(grouped) - real < 0.5 * (_padded_tokens(shuffled) - real)
    assert grouped.train_dataset.column_names == pairs.column_names

    sentences = _encoded_sst2(glue_dir, tokenizer, 8, 64)
    assert longest_sequence_lengths(sentences) is None  # Trainer's own len(input_ids) is right there
    assert longest_sequence_lengths(pairs.add_column("length", [1] * len(pairs))) is None  # the user's column wins


def test_logged_parts_add_up_and_lm_coef_switch_changes_the_objective(tiny_gpt1_dir, glue_dir, tmp_path):
    """Through the CLI entry point, in-process: λ = 0.5 logs task_loss and lm_loss with loss = task + λ·lm in every
    window (here with gradient accumulation 2); λ = 0 logs no lm_loss (it is not computed) and loss = task_loss;
    the trajectories differ. Evaluation reports the parts the same way."""
    histories = {}
    for lm_coef in ("0.5", "0"):
        out = tmp_path / f"lm{lm_coef}"
        code = ft.main(
            [
                "--task",
                "sst2",
                "--model",
                str(tiny_gpt1_dir),
                "--data-dir",
                str(glue_dir),
                "--output-dir",
                str(out),
                "--max-train-samples",
                "64",
                "--max-eval-samples",
                "32",
                "--max-steps",
                "6",
                "--batch-size",
                "4",
                "--gradient-accumulation-steps",
                "2",
                "--max-length",
                "48",
                "--logging-steps",
                "2",
                "--eval-steps",
                "3",
                "--lm-coef",
                lm_coef,
                "--learning-rate",
                "1e-3",
                "--disable-tqdm",
                "--no-plot",
                "--seed",
                "1",
            ]
        )
        assert code == 0
        histories[lm_coef] = json.loads((out / "trainer_state.json").read_text())["log_history"]
        assert json.loads((out / "config.json").read_text())["lm_coef"] == float(lm_coef)

    train = [e for e in histories["0.5"] if "loss" in e]
    assert len(train) >= 3
    for entry in train:
        assert entry["lm_loss"] > 5  # ~ln(40482) for a random tiny LM
        assert entry["loss"] == pytest.approx(entry["task_loss"] + 0.5 * entry["lm_loss"], abs=2e-4)
    evals = [e for e in histories["0.5"] if "eval_loss" in e]
    assert evals and all(
        e["eval_loss"] == pytest.approx(e["eval_task_loss"] + 0.5 * e["eval_lm_loss"], abs=2e-4) for e in evals
    )

    train0 = [e for e in histories["0"] if "loss" in e]
    assert all("lm_loss" not in e for e in histories["0"]) and all("eval_lm_loss" not in e for e in histories["0"])
    for entry in train0:
        assert entry["loss"] == pytest.approx(entry["task_loss"], abs=1e-5)
    assert [e["loss"] for e in train0] != pytest.approx([e["task_loss"] for e in train], abs=1e-6)
    assert train0[-1]["loss"] < 1.5 < train[-1]["loss"]  # L3 with λ·L1 ≈ 0.5·10.6 on top vs the task loss alone


def test_evaluation_gathers_task_logits_only(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("sst2"), tokenizer, seed=0)
    dataset = _encoded_sst2(glue_dir, tokenizer, 12, 48, split="validation")
    trainer = ft.GPT1Trainer(
        model=model,
        args=_args(tmp_path, per_device_eval_batch_size=5),
        data_collator=ta.GPT1DataCollator(tokenizer),
        compute_metrics=ta.get_adapter("sst2").compute_metrics,
    )
    output = trainer.predict(dataset)
    assert isinstance(output.predictions, np.ndarray) and output.predictions.shape == (12, 2)
    assert output.label_ids.shape == (12,)  # labels only, not lm_labels
    assert set(output.metrics) >= {"test_loss", "test_accuracy", "test_task_loss", "test_lm_loss"}
    with pytest.raises(RuntimeError, match="LM logits"):
        ft.check_task_logits(torch.zeros(2, 7, 40482))
    with pytest.raises(RuntimeError, match="several prediction tensors"):
        ft.check_task_logits((torch.zeros(2, 2), torch.zeros(2, 7, 40482)))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: atomic saves, signal handling
# ----------------------------------------------------------------------------------------------------------------------


def _small_trainer(tiny_gpt1_dir, tokenizer, glue_dir, output_dir, callbacks=(), **overrides):
    model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("sst2"), tokenizer, seed=0)
    values = dict(per_device_train_batch_size=4, max_steps=6, save_strategy="steps", save_steps=100)
    values.update(overrides)
    return ft.GPT1Trainer(
        model=model,
        args=_args(output_dir, **values),
        processing_class=tokenizer,
        train_dataset=_encoded_sst2(glue_dir, tokenizer, 24, 32),
        data_collator=ta.GPT1DataCollator(tokenizer),
        callbacks=list(callbacks),
    )


def test_checkpoints_and_final_weights_are_as_readable_as_their_config(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    """safetensors writes model.safetensors 0600 (file_modes); a checkpoint or final model another user cannot read
    beside a readable config.json is useless to a serving container or a colleague. A file of the user's own in the
    output folder keeps its mode."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "private.txt").write_text("mine")
    os.chmod(out / "private.txt", 0o600)
    trainer = _small_trainer(tiny_gpt1_dir, tokenizer, glue_dir, out, max_steps=2, save_steps=2)
    trainer.train()
    assert_modes_follow_umask(out / "checkpoint-2")
    trainer.save_model(str(out))
    assert_modes_follow_umask(out / "model.safetensors", out / "config.json")
    assert os.stat(out / "private.txt").st_mode & 0o777 == 0o600


def test_checkpoint_appears_only_when_complete(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = _small_trainer(tiny_gpt1_dir, tokenizer, glue_dir, out, max_steps=2, save_strategy="no")
    trainer.train()
    trainer.state.global_step = 7

    def killed(*args, **kwargs):  # the process "dies" after the weights, before optimizer/RNG/trainer state
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(trainer, "_save_rng_state", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(trainer.model, trial=None)
    assert not (out / "checkpoint-7").exists()  # nothing resume would mistake for a checkpoint
    assert (out / ft.STAGING_DIR_NAME / "checkpoint-7" / "model.safetensors").exists()
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(out)) is None

    monkeypatch.undo()
    trainer._save_checkpoint(trainer.model, trial=None)
    files = {p.name for p in (out / "checkpoint-7").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= files
    assert not (out / ft.STAGING_DIR_NAME).exists()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-7")


def test_sigterm_saves_a_checkpoint_and_stops(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")

    class SendSigterm(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                assert signal.getsignal(signal.SIGTERM) == on_signal._handle  # never kill the test process itself
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    on_signal = ft.SaveOnSignalCallback()
    out = tmp_path / "run"
    trainer = _small_trainer(tiny_gpt1_dir, tokenizer, glue_dir, out, callbacks=[on_signal], max_steps=50)
    trainer.add_callback(SendSigterm())  # runs after on_signal: the flag is seen at the next step's end
    trainer.train()
    assert on_signal.received == signal.SIGTERM
    assert trainer.state.global_step == 3
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored after training


# ----------------------------------------------------------------------------------------------------------------------
# Outputs: model card, GLUE submission files, curves, pipeline
# ----------------------------------------------------------------------------------------------------------------------


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_model_card_has_valid_hub_metadata():
    from huggingface_hub import ModelCard

    spec = ta.get_task_spec("mnli")
    metrics = {
        "eval_matched_accuracy": 0.8211,
        "eval_mismatched_accuracy": 0.8134,
        "eval_matched_loss": 0.5,
        "eval_matched_runtime": 3.0,
        "epoch": 3.0,
    }
    settings = {"task": "mnli", "lm_coef": 0.5, "learning_rate": 6.25e-5, "eval_splits": ["matched", "mismatched"]}
    card = ft.fill_model_card(
        spec=spec,
        metrics=metrics,
        settings=settings,
        model_name="gpt1-mnli",
        base_model="openai-community/openai-gpt",
        usage_path="me/gpt1-mnli",
    )
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "mit" and meta["base_model"] == "openai-community/openai-gpt"
    assert meta["datasets"] == ["nyu-mll/glue"] and "gpt1" in meta["tags"] and "mnli" in meta["tags"]
    results = meta["model-index"][0]["results"]
    found = {(r["dataset"]["split"], r["metrics"][0]["type"]): r["metrics"][0]["value"] for r in results}
    assert found == {("validation_matched", "accuracy"): 0.8211, ("validation_mismatched", "accuracy"): 0.8134}
    parsed = ModelCard(card)  # huggingface_hub's own parser/validator accepts it
    assert parsed.data.eval_results[0].dataset_config == "mnli"
    body = card.split("---\n", 2)[2]
    assert "Radford" in body and "Intended use" in body and "| learning_rate | 6.25e-05 |" in body
    assert 'pipeline("text-classification", model="me/gpt1-mnli")' in body and "text_pair" in body

    mc = ft.fill_model_card(
        spec=ta.get_task_spec("story_cloze"), metrics={"eval_accuracy": 0.7}, settings={}, model_name="sc"
    )
    meta = _front_matter(mc)
    assert meta["pipeline_tag"] == "multiple-choice" and "base_model" not in meta
    assert "AutoModelForMultipleChoice" in mc


def test_glue_submission_files(tmp_path):
    two = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    rows = Dataset.from_dict({"idx": [10, 11, 12]})
    path = ft.write_predictions(two, rows, ta.get_task_spec("sst2"), tmp_path, "test")
    assert path.name == "SST-2.tsv" and path.read_text() == "index\tprediction\n10\t1\n11\t0\n12\t1\n"
    path = ft.write_predictions(two, rows, ta.get_task_spec("qnli"), tmp_path, "test")
    assert path.name == "QNLI.tsv" and path.read_text().splitlines()[1:] == [
        "10\tnot_entailment",
        "11\tentailment",
        "12\tnot_entailment",
    ]
    three = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    path = ft.write_predictions(three, rows, ta.get_task_spec("mnli"), tmp_path, "test_mismatched")
    assert path.name == "MNLI-mm.tsv" and path.read_text().splitlines()[1] == "10\tcontradiction"
    path = ft.write_predictions(np.array([[5.7], [-0.2], [2.5]]), rows, ta.get_task_spec("stsb"), tmp_path, "test")
    assert path.name == "STS-B.tsv" and path.read_text().splitlines()[1:] == ["10\t5.000", "11\t0.000", "12\t2.500"]
    path = ft.write_predictions(
        two, Dataset.from_dict({"x": [1, 2, 3]}), ta.get_task_spec("story_cloze"), tmp_path, "test"
    )
    assert path.name == "story_cloze_test.tsv" and path.read_text().splitlines()[1] == "0\tending2"


def test_pipeline_on_saved_classification_and_regression_checkpoints(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    """Checkpoints saved as finetune.py saves them (Trainer.save_model: model + tokenizer) serve
    pipeline("text-classification"): label names for SST-2, a raw score for STS-B-style regression, with the
    tokenizer's framing (start text extract; start a delim b extract for pairs)."""
    for task in ("sst2", "stsb"):
        model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec(task), tokenizer, seed=0)
        trainer = ft.GPT1Trainer(model=model, args=_args(tmp_path / task), processing_class=tokenizer)
        trainer.save_model(str(tmp_path / task))

    classifier = pipeline("text-classification", model=str(tmp_path / "sst2"))
    out = classifier("a gripping , funny film", top_k=None)
    assert {o["label"] for o in out} == {"negative", "positive"} and sum(o["score"] for o in out) == pytest.approx(1)
    model = classifier.model.eval()
    batch = classifier.tokenizer("a gripping , funny film", return_tensors="pt")
    assert batch["input_ids"][0, 0] == 40478 and batch["input_ids"][0, -1] == 40480
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)[0]
    assert {o["label"]: o["score"] for o in out}["positive"] == pytest.approx(probs[1].item(), abs=1e-5)

    scorer = pipeline("text-classification", model=str(tmp_path / "stsb"))
    pair = {"text": "A man is playing a guitar.", "text_pair": "Someone plays music."}
    (result,) = [scorer(pair)] if isinstance(scorer(pair), dict) else scorer(pair)
    assert result["label"] == "score"
    batch = scorer.tokenizer(pair["text"], pair["text_pair"], return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == 40478 and ids[-1] == 40480 and ids.count(40479) == 1
    with torch.no_grad():
        raw = scorer.model.eval()(**batch).logits[0, 0].item()
    assert result["score"] == pytest.approx(raw, abs=1e-5)  # no sigmoid/softmax: problem_type="regression"


def test_two_eval_sets_as_for_mnli_matched_and_mismatched(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    """MNLI evaluates on matched and mismatched dev sets: Trainer's eval_dataset dict prefixes each set's metrics,
    the loss parts follow the same prefixes, and the best checkpoint is chosen by matched accuracy. (No MNLI files
    here: two slices of SST-2 dev stand in for the two sets.)"""
    from transformers.trainer_utils import get_last_checkpoint

    args = ft.parse_args(
        [
            "--task",
            "mnli",
            "--model",
            "m",
            "--output-dir",
            str(tmp_path),
            "--eval-steps",
            "2",
            "--batch-size",
            "4",
            "--max-steps",
            "4",
            "--disable-tqdm",
        ]
    )
    names = [
        ft.short_eval_name(s)
        for s in ft.eval_split_names({"train": 0, "validation_matched": 0, "validation_mismatched": 0})
    ]
    assert names == ["matched", "mismatched"]
    training = ft.schedule_training_arguments(args.training, ta.get_task_spec("mnli"), names)
    assert training.metric_for_best_model == "matched_accuracy"
    training = dataclasses.replace(training, use_cpu=True, logging_steps=1, report_to="none", learning_rate=1e-3)
    model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("sst2"), tokenizer, seed=0)
    evals = {
        "matched": _encoded_sst2(glue_dir, tokenizer, 10, 32, "validation"),
        "mismatched": _encoded_sst2(glue_dir, tokenizer, 10, 32, "validation", start=10),
    }
    trainer = ft.GPT1Trainer(
        model=model,
        args=training,
        train_dataset=_encoded_sst2(glue_dir, tokenizer, 16, 32),
        eval_dataset=evals,
        processing_class=tokenizer,
        data_collator=ta.GPT1DataCollator(tokenizer),
        compute_metrics=ta.get_adapter("sst2").compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate()
    for prefix in ("eval_matched", "eval_mismatched"):
        assert {f"{prefix}_accuracy", f"{prefix}_loss", f"{prefix}_task_loss", f"{prefix}_lm_loss"} <= set(metrics)
        assert metrics[f"{prefix}_loss"] == pytest.approx(
            metrics[f"{prefix}_task_loss"] + 0.5 * metrics[f"{prefix}_lm_loss"], abs=1e-4
        )
    assert trainer.state.best_model_checkpoint in {str(tmp_path / "checkpoint-2"), str(tmp_path / "checkpoint-4")}
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")


# ----------------------------------------------------------------------------------------------------------------------
# PEFT (--peft lora|ia3): only the adapter trains, the saved adapter and the merged model reproduce the run
# ----------------------------------------------------------------------------------------------------------------------


class _FinalModelProbe(TrainerCallback):
    """At the end of `trainer.train()` (after Trainer reloaded the best checkpoint, before the script saves anything):
    the model's logits on a fixed batch and a copy of every parameter, i.e. what the run produced."""

    def __init__(self, batch):
        self.batch, self.logits, self.params = batch, None, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.logits = model(**self.batch).logits.detach().clone()
        self.params = {name: p.detach().clone() for name, p in model.named_parameters()}
        model.train(was_training)


def _eval_batch(glue_dir, tokenizer, n=32, max_length=48):
    """The first `n` SST-2 dev rows as finetune.py evaluates them (--max-eval-samples n --max-length max_length)."""
    features = list(_encoded_sst2(glue_dir, tokenizer, n, max_length, split="validation"))
    batch = ta.GPT1DataCollator(tokenizer)(features)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "mc_token_ids")}


PEFT_RUN = [
    "--task",
    "sst2",
    "--max-train-samples",
    "64",
    "--max-eval-samples",
    "32",
    "--max-steps",
    "6",
    "--batch-size",
    "4",
    "--max-length",
    "48",
    "--save-steps",
    "2",
    "--learning-rate",
    "3e-3",
    "--disable-tqdm",
    "--no-plot",
    "--seed",
    "3",
]


def _run_in_process(argv, probe=None):
    """`finetune.py` in-process, through the same `_setup` / `_train_and_report` as `run()`, with an optional probe."""
    args = ft.parse_args(argv)
    trainer, parts = ft._setup(args)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    if probe is not None:
        trainer.add_callback(probe)
    assert ft._train_and_report(args, trainer, **parts) == 0
    return trainer, before, trainable


@pytest.fixture(scope="module")
def lora_run(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "out"
    probe = _FinalModelProbe(_eval_batch(glue_dir, tokenizer))
    argv = [
        *PEFT_RUN,
        "--model",
        str(tiny_gpt1_dir),
        "--data-dir",
        str(glue_dir),
        "--output-dir",
        str(out),
        "--peft",
        "lora",
        "--merge-adapter",
    ]
    trainer, before, trainable = _run_in_process(argv, probe)
    return dict(
        out=out,
        probe=probe,
        before=before,
        trainable=trainable,
        argv=argv,
        results=json.loads((out / "eval_results.json").read_text()),
    )


def test_peft_lora_trains_only_the_adapter_head_and_token_rows(lora_run):
    probe, before, trainable = lora_run["probe"], lora_run["before"], lora_run["trainable"]
    kinds = {
        name: next((k for k in ("lora_", "modules_to_save", "trainable_tokens") if k in name), None)
        for name in trainable
    }
    assert None not in kinds.values(), [n for n, k in kinds.items() if k is None]
    assert set(kinds.values()) == {"lora_", "modules_to_save", "trainable_tokens"}
    assert any(".score.modules_to_save." in name for name in trainable)  # the classifier head is trained
    for name in trainable:
        assert not torch.equal(probe.params[name], before[name]), f"{name} did not train"
    frozen = set(before) - trainable
    assert len(frozen) > 10
    for name in frozen:  # the base weights are bit-identical
        assert torch.equal(probe.params[name], before[name]), name

    settings = lora_run["results"]["settings"]
    expected = sum(before[name].numel() for name in trainable)
    assert settings["peft"] == "lora" and settings["lora_r"] == 8 and settings["trainable_parameters"] == expected
    assert sum(settings["trainable_parameters_by_kind"].values()) == expected
    assert 0 < settings["trainable_percent"] < 2
    assert settings["adapter_base_model"] == str(
        Path(lora_run["argv"][lora_run["argv"].index("--model") + 1]).resolve()
    )
    # the reloaded best checkpoint is what was evaluated and saved
    best_step = int(settings["best_checkpoint"].split("-")[1])
    history = json.loads((lora_run["out"] / "trainer_state.json").read_text())["log_history"]
    logged = next(e for e in history if "eval_loss" in e and e["step"] == best_step)
    assert lora_run["results"]["eval_loss"] == pytest.approx(logged["eval_loss"], abs=1e-6)
    assert lora_run["results"]["eval_accuracy"] == logged["eval_accuracy"]
    from safetensors.torch import load_file

    final = load_file(lora_run["out"] / "adapter_model.safetensors")
    best = load_file(lora_run["out"] / settings["best_checkpoint"] / "adapter_model.safetensors")
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)
    print(f"\nbest checkpoint: {settings['best_checkpoint']} of checkpoint-2/4/6")


def test_peft_lora_output_is_a_small_adapter_that_reproduces_the_run(lora_run, tiny_gpt1_dir, tokenizer):
    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out, probe = lora_run["out"], lora_run["probe"]
    files = {p.name for p in out.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "README.md",
        "eval_results.json",
    } <= files
    assert "model.safetensors" not in files and ft.BASE_MODEL_DIR_NAME not in files  # --model serves as the base
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_gpt1_dir.resolve())
    assert adapter_config["trainable_token_indices"] == [40478, 40479, 40480, 40481]
    saved = load_file(out / "adapter_model.safetensors")
    assert not any(k.endswith(("tokens_embed.weight", "lm_head.weight")) for k in saved)  # no full table
    adapter_bytes = (out / "adapter_model.safetensors").stat().st_size
    merged_bytes = (out / ft.MERGED_DIR_NAME / "model.safetensors").stat().st_size
    print(f"\nadapter_model.safetensors {adapter_bytes:,} B vs merged model.safetensors {merged_bytes:,} B")
    assert adapter_bytes < merged_bytes / 50 and lora_run["results"]["settings"]["adapter_bytes"] == adapter_bytes
    for checkpoint in out.glob("checkpoint-*"):  # checkpoints hold adapters too, without the embedding table
        assert not (checkpoint / "model.safetensors").exists()
        assert (checkpoint / "adapter_model.safetensors").stat().st_size == adapter_bytes

    base = AutoModelForSequenceClassification.from_pretrained(tiny_gpt1_dir)
    hf_gpt1.add_special_tokens(base, tokenizer)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    auto = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(out / ft.MERGED_DIR_NAME).eval()
    assert type(merged) is GPT1ForSequenceClassification
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    for name, model in (("PeftModel", reloaded), ("AutoPeft", auto), ("merged", merged)):
        with torch.no_grad():
            logits = model(**probe.batch).logits
        torch.testing.assert_close(logits, probe.logits, rtol=0, atol=1e-5, msg=name)

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "AutoPeftModelForSequenceClassification" in card and str(out / ft.MERGED_DIR_NAME) in card
    merged_card = (out / ft.MERGED_DIR_NAME / "README.md").read_text()
    assert yaml.safe_load(merged_card.split("---\n", 2)[1])["library_name"] == "transformers"
    assert json.loads((out / ft.MERGED_DIR_NAME / "eval_results.json").read_text()) == lora_run["results"]


def test_peft_resume_from_a_checkpoint_matches_the_uninterrupted_run(lora_run, tmp_path):
    """Trainer's resume reloads the adapter (and optimizer, scheduler, RNG) into the PeftModel: continuing from
    checkpoint-4 reproduces the uninterrupted run's checkpoint-6 and its evaluation bit for bit."""
    import shutil

    from safetensors.torch import load_file

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.steps += 1

    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(lora_run["out"] / "checkpoint-4", out / "checkpoint-4")
    argv = [a if a != str(lora_run["out"]) else str(out) for a in lora_run["argv"] if a != "--merge-adapter"]
    _run_in_process([*argv, "--resume-from-checkpoint"], CountSteps())
    assert CountSteps.steps == 2  # steps 5 and 6 only: the adapter of step 4 was loaded, not trained again
    resumed, reference = (load_file(d / "checkpoint-6" / "adapter_model.safetensors") for d in (out, lora_run["out"]))
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    history = [json.loads((d / "trainer_state.json").read_text())["log_history"] for d in (out, lora_run["out"])]
    evals = [[(e["step"], e["eval_loss"]) for e in h if "eval_loss" in e and e["step"] == 6] for h in history]
    assert evals[0] == evals[1] and evals[0]


def test_peft_ia3_saves_the_resized_base_it_needs(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    """IA³ cannot train the special-token rows, so they stay as add_special_tokens drew them: the adapter must point
    to a base that has them. finetune.py saves that base once into output_dir/base_model/."""
    from peft import AutoPeftModelForSequenceClassification

    out = tmp_path / "ia3"
    probe = _FinalModelProbe(_eval_batch(glue_dir, tokenizer, n=8))
    argv = [
        *PEFT_RUN,
        "--model",
        str(tiny_gpt1_dir),
        "--data-dir",
        str(glue_dir),
        "--output-dir",
        str(out),
        "--peft",
        "ia3",
        "--max-steps",
        "2",
        "--eval-strategy",
        "no",
    ]
    with pytest.warns(UserWarning, match="stay as initialised"):
        trainer, before, trainable = _run_in_process(argv, probe)
    assert all("ia3_" in name or "modules_to_save" in name for name in trainable)
    base_dir = out / ft.BASE_MODEL_DIR_NAME
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir.resolve())
    assert json.loads((base_dir / "config.json").read_text())["vocab_size"] == 40482
    results = json.loads((out / "eval_results.json").read_text())
    assert results["settings"]["peft"] == "ia3" and results["settings"]["peft_embeddings"] == "auto"
    auto = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(auto(**probe.batch).logits, probe.logits, rtol=0, atol=1e-5)


def test_peft_option_errors(tmp_path, capsys):
    base = ["--task", "sst2", "--model", "m", "--output-dir", str(tmp_path)]
    for extra, message in [
        (["--merge-adapter"], "--merge-adapter needs --peft"),
        (["--peft", "ia3", "--peft-embeddings", "tokens"], "needs --peft lora"),
        (["--peft", "lora", "--push-to-hub"], "--push-to-hub with --peft needs --merge-adapter"),
        (
            ["--peft", "lora", "--merge-adapter", "--push-to-hub", "--hub-strategy", "every_save"],
            "not supported with --peft",
        ),
        (["--hub-strategy", "checkpoint"], "--hub-strategy needs --push-to-hub"),
        (["--peft", "lora", "--lora-r", "0"], "--lora-r must be >= 1"),
    ]:
        with pytest.raises(SystemExit):
            ft.parse_args(base + extra)
        assert message in capsys.readouterr().err, extra  # argparse's error names the problem
    args = ft.parse_args(base + ["--peft", "lora", "--lora-target-modules", "c_attn, mlp.c_proj", "--lora-r", "4"])
    assert ft.peft_options(args.peft) == dict(
        r=4, alpha=16, dropout=0.05, target_modules=["c_attn", "mlp.c_proj"], embeddings="auto"
    )


def test_adapter_base_model_is_the_model_folder_only_when_it_can_serve(tiny_gpt1_dir, tokenizer, tmp_path):
    """The adapter points to --model when AutoPeft can rebuild the run from it; otherwise to output_dir/base_model."""
    from transformers import OpenAIGPTLMHeadModel

    from hf_gpt1.peft_integration import make_peft_config
    from testing_utils import save_reference, tiny_openai_config

    own = str(tmp_path / "out" / ft.BASE_MODEL_DIR_NAME)

    def base_for(model_path, task, **options):
        model = ft.load_model_for_task(str(model_path), ta.get_task_spec(task), tokenizer, seed=0)
        config = make_peft_config(model, options.pop("method", "lora"), **options)
        path, must_save = ft.adapter_base_model(str(model_path), model, config, str(tmp_path / "out"))
        assert must_save == (path == own)
        return path

    assert base_for(tiny_gpt1_dir, "sst2") == str(tiny_gpt1_dir.resolve())  # LoRA carries the token rows
    assert base_for(tiny_gpt1_dir, "story_cloze") == str(tiny_gpt1_dir.resolve())
    assert base_for(tiny_gpt1_dir, "sst2", embeddings="full") == str(tiny_gpt1_dir.resolve())
    assert base_for(tiny_gpt1_dir, "sst2", embeddings="none") == own  # frozen random rows: only a saved base has them
    with pytest.warns(UserWarning):
        assert base_for(tiny_gpt1_dir, "sst2", method="ia3") == own
    assert base_for(tiny_gpt1_dir, "mnli") == own  # an LM folder builds 2 labels, MNLI has 3
    assert base_for(tiny_gpt1_dir, "stsb") == own  # regression head
    save_reference(OpenAIGPTLMHeadModel, tiny_openai_config(vocab_size=40478, n_positions=64), tmp_path / "oa")
    assert base_for(tmp_path / "oa", "sst2") == own  # AutoPeft would build transformers' OpenAIGPT* from it


# ----------------------------------------------------------------------------------------------------------------------
# NaN / inf loss: stop at once, keep the earlier checkpoints, never save the poisoned step
# ----------------------------------------------------------------------------------------------------------------------


def test_nonfinite_loss_stops_training_without_saving_that_step(tiny_gpt1_dir, tokenizer, glue_dir, tmp_path):
    """lr = 1e30: step 1 is finite and checkpointed, its update blows the weights up, step 2's loss is NaN. Training
    stops at step 2 (Trainer alone would go on, log the NaN away as loss 0 and save NaN weights), with no checkpoint
    at step 2 and the guard naming the step and the last good checkpoint."""
    out = tmp_path / "run"
    evaluated = []

    class RecordEvaluations(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):
            evaluated.append(state.global_step)

    model = ft.load_model_for_task(str(tiny_gpt1_dir), ta.get_task_spec("sst2"), tokenizer, seed=0)
    args = _args(
        out,
        per_device_train_batch_size=4,
        max_steps=10,
        save_strategy="steps",
        save_steps=1,
        learning_rate=1e30,
        eval_strategy="steps",
        eval_steps=1,
    )
    trainer = ft.GPT1Trainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=_encoded_sst2(glue_dir, tokenizer, 24, 32),
        eval_dataset=_encoded_sst2(glue_dir, tokenizer, 8, 32, split="validation"),
        data_collator=ta.GPT1DataCollator(tokenizer),
        callbacks=[RecordEvaluations()],
    )
    trainer.train()
    guard = trainer.nonfinite_guard
    assert guard.step == trainer.state.global_step == 2
    assert not math.isfinite(guard.values["task_loss"]) and not math.isfinite(guard.values["loss"])
    assert guard.checkpoint == str(out / "checkpoint-1")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert evaluated == [1]  # no evaluation of the poisoned weights either
    assert "non-finite training loss at step 2" in guard.message and str(out / "checkpoint-1") in guard.message
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1


def test_nonfinite_guard_reads_logged_losses_for_a_plain_trainer(tmp_path):
    from transformers import TrainerControl, TrainerState

    guard = ft.NonFiniteLossCallback()
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    state.global_step = 7
    guard.on_train_begin(args, state, control)
    guard.on_log(args, state, control, logs={"loss": 1.5, "task_loss": 0.7, "learning_rate": 1e-4})
    assert guard.step is None and not control.should_training_stop
    control.should_save = control.should_evaluate = True  # scheduled for this step by DefaultFlowCallback
    guard.on_log(args, state, control, logs={"loss": 1.5, "lm_loss": float("inf")})
    assert guard.step == 7 and guard.values == {"lm_loss": float("inf")} and guard.checkpoint is None
    assert control.should_training_stop and not control.should_save and not control.should_evaluate
    assert "no checkpoint was saved before it" in guard.message
    control.should_save = True
    guard.on_epoch_end(args, state, control)
    assert not control.should_save


# ----------------------------------------------------------------------------------------------------------------------
# --push-to-hub: a failed upload is one line, exit 1, and leaves the finished run as it was
# ----------------------------------------------------------------------------------------------------------------------


def _folder_hash(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_failed_push_exits_1_with_one_line_and_keeps_the_output(
    hub_server, tiny_gpt1_dir, glue_dir, tmp_path, monkeypatch, capsys
):
    from huggingface_hub import HfApi

    out = tmp_path / "out"
    seen = {}

    def dropped_connection(self, **kwargs):
        seen["hash"] = _folder_hash(Path(kwargs["folder_path"]))  # the finished run, as push_folder found it
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(HfApi, "upload_folder", dropped_connection)
    code = ft.main(
        [
            "--task",
            "sst2",
            "--model",
            str(tiny_gpt1_dir),
            "--data-dir",
            str(glue_dir),
            "--output-dir",
            str(out),
            "--max-train-samples",
            "16",
            "--max-eval-samples",
            "8",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--max-length",
            "32",
            "--disable-tqdm",
            "--no-plot",
            "--push-to-hub",
            "--hub-model-id",
            "test-user/never-uploaded",
        ]
    )
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("finetune.py: error: Could not upload the files for test-user/never-uploaded")
    assert "unreachable" in error
    assert {"model.safetensors", "config.json", "README.md", "eval_results.json"} <= {p.name for p in out.iterdir()}
    assert _folder_hash(out) == seen["hash"]  # the push changed nothing locally
    assert hub_server.files("test-user/never-uploaded").keys() == {".gitattributes"}  # created, nothing committed
