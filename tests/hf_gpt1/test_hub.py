"""Publishing on the Hub and loading by name, end to end against the local Hub server (tests/hub_server.py).

One module-scoped server and one tiny GPT-1 classifier, trained for a few steps on real SST-2 rows with the real
GPT-1 tokenizer by a `Trainer(push_to_hub=True)`. The same model is then published the other ways
(`model.push_to_hub` + `tokenizer.push_to_hub`, `push_folder`), and a fresh interpreter loads every repo by name,
with the plugin and - where `hf_gpt1` cannot be imported - with `trust_remote_code=True`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import socket
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import hf_gpt1
from hf_gpt1 import GPT1ForSequenceClassification, add_special_tokens, load_gpt1_tokenizer
from hf_gpt1.hub import (
    IGNORE_PATTERNS,
    CheckpointError,
    GPT1HubTrainer,
    HubPushError,
    attach_model_card,
    check_hub_access,
    list_upload_files,
    push_folder,
    push_model,
    render_model_card,
    validate_checkpoint,
)
from hub_server import OTHER_USER, READ_TOKEN, USER, HubServer, hub_env, use_local_hub
from testing_utils import run_python, tiny_gpt1_config

TRAINER_REPO = f"{USER}/gpt1-sst2-trainer"
MODEL_REPO = f"{USER}/gpt1-sst2-model"
FOLDER_REPO = f"{USER}/gpt1-sst2-folder"
PUSH_MODEL_REPO = f"{USER}/gpt1-sst2-push-model"
CODE_FILES = {
    "modeling_gpt1.py",
    "configuration_gpt1.py",
    "conversion_gpt1.py",
    "input_checks_gpt1.py",
    "modeling_outputs_gpt1.py",
}
REQUIRED_CARD_KEYS = {"library_name", "pipeline_tag", "tags", "license", "datasets", "model-index", "base_model"}
SENTENCES = ["a gripping , funny and moving film", "the plot is a mess"]


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer() as server, pytest.MonkeyPatch.context() as mp:
        use_local_hub(server, mp, tmp_path_factory.mktemp("hf_home"))
        yield server
    if server.errors:
        pytest.fail("the local test Hub crashed while serving requests:\n" + "\n".join(server.errors))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_gpt1_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def sst2_rows(glue_dir):
    with open(glue_dir / "SST-2" / "train.tsv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"], int(row["label"])) for _, row in zip(range(24), reader)]


def _encode(tokenizer, rows):
    encoded = tokenizer([text for text, _ in rows], truncation=True, max_length=32)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, (_, label) in zip(encoded["input_ids"], encoded["attention_mask"], rows)
    ]


def _accuracy(eval_prediction):
    logits = (
        eval_prediction.predictions[0]
        if isinstance(eval_prediction.predictions, tuple)
        else eval_prediction.predictions
    )
    return {"accuracy": float((logits.argmax(-1) == eval_prediction.label_ids).mean())}


@pytest.fixture(scope="module")
def trained(hub, tokenizer, sst2_rows, tmp_path_factory):
    """`Trainer(push_to_hub=True)`: 4 steps on SST-2 rows, a checkpoint push at step 2 and 4, then `save_model`."""
    torch.manual_seed(0)
    model = GPT1ForSequenceClassification(tiny_gpt1_config(num_labels=2, n_positions=32))
    add_special_tokens(model, tokenizer, generator=torch.Generator().manual_seed(0))
    output_dir = tmp_path_factory.mktemp("trainer_run")
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        label_names=["labels"],  # not lm_labels (the heads' optional LM targets): only then are metrics computed
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id=TRAINER_REPO,
        hub_strategy="every_save",
        seed=0,
    )
    trainer = GPT1HubTrainer(
        model=model,
        args=args,
        train_dataset=_encode(tokenizer, sst2_rows[:16]),
        eval_dataset=_encode(tokenizer, sst2_rows[16:]),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_accuracy,
    )
    attach_model_card(trainer, task="sst2", base_model="openai-community/openai-gpt")
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)  # eval_results.json: the card's model-index comes from it
    trainer.save_model()  # push_to_hub=True: the final push ("Model save")
    trainer.model.eval()
    assert "eval_accuracy" in metrics, metrics
    return trainer, output_dir, metrics


@pytest.fixture(scope="module")
def model_dir(trained, tokenizer, tmp_path_factory):
    """The trained model + tokenizer, saved plainly (no card, no results)."""
    folder = tmp_path_factory.mktemp("saved")
    trained[0].model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def folder_hash(folder: Path) -> str:
    """Content + layout of a folder (paths, bytes, modes), to prove a failed push left it untouched."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(oct(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _card_metadata(text: str) -> dict:
    assert text.startswith("---\n"), text[:200]
    front_matter = text.split("---\n", 2)[1]
    return yaml.safe_load(front_matter)


def _check_auto_map_resolves(files: dict[str, bytes]):
    config = json.loads(files["config.json"])
    assert config["model_type"] == "gpt1"
    assert config["auto_map"]["AutoConfig"] == "configuration_gpt1.GPT1Config"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_gpt1.GPT1ForSequenceClassification"
    for reference in config["auto_map"].values():
        module, class_name = reference.rsplit(".", 1)
        assert f"{module}.py" in files, reference
        assert f"class {class_name}(".encode() in files[f"{module}.py"], reference


def _check_tokenizer_files(files: dict[str, bytes]):
    added = {t["content"]: t["id"] for t in json.loads(files["tokenizer.json"])["added_tokens"]}
    assert {"_start_": 40478, "_delimiter_": 40479, "_classify_": 40480, "<pad>": 40481}.items() <= added.items()
    tokenizer_config = json.loads(files["tokenizer_config.json"])
    assert tokenizer_config["tokenizer_class"] == "OpenAIGPTTokenizer"
    assert (tokenizer_config["bos_token"], tokenizer_config["cls_token"]) == ("_start_", "_classify_")


# ----------------------------------------------------------------------------------------------------------------------
# Validation and dry run (no network)
# ----------------------------------------------------------------------------------------------------------------------


def test_validate_accepts_a_saved_checkpoint(model_dir):
    summary = validate_checkpoint(model_dir)
    assert summary.weight_files == ["model.safetensors"]
    assert set(summary.tokenizer_files) == {"tokenizer.json", "tokenizer_config.json"}
    assert summary.special_token_ids == {"_start_": 40478, "_delimiter_": 40479, "_classify_": 40480, "<pad>": 40481}
    assert not summary.card_exists and summary.card is not None  # no README.md: it will be rendered


def test_validation_reports_every_problem_before_any_network_call(model_dir, tmp_path, hub):
    folder = _copy(model_dir, tmp_path / "broken")
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    config["extract_token_id"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # truncated download / copy
    (folder / "tokenizer_config.json").unlink()
    before, requests = folder_hash(folder), len(hub.requests)

    with pytest.raises(CheckpointError) as error:
        push_folder(folder, f"{USER}/never-created")
    message = str(error.value)
    assert "no auto_map" in message
    assert "model.safetensors is not a readable safetensors file" in message and "truncated" in message
    assert "tokenizer_config.json is missing" in message
    assert "extract_token_id=7" in message and "_classify_ id 40480" in message
    assert len(error.value.problems) == 4
    assert len(hub.requests) == requests and folder_hash(folder) == before


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: (f / "modeling_gpt1.py").unlink(), "points to modeling_gpt1.py, which is not in the folder"),
        (lambda f: (f / "model.safetensors").unlink(), "no weights"),
        (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer vocabulary"),
        (lambda f: (f / "config.json").write_text('{"model_type": "gpt2"}'), "expected 'gpt1'"),
        (lambda f: (f / "README.md").write_text("---\nlicense: [unclosed\n---\n"), "README.md has invalid metadata"),
    ],
    ids=["code-missing", "weights-missing", "tokenizer-missing", "wrong-model-type", "bad-card-yaml"],
)
def test_validation_names_the_problem(model_dir, tmp_path, damage, expected):
    folder = _copy(model_dir, tmp_path / "ckpt")
    damage(folder)
    with pytest.raises(CheckpointError, match="not a publishable GPT-1 checkpoint") as error:
        validate_checkpoint(folder)
    assert expected in str(error.value)


def test_tokenizer_without_gpt1_special_tokens_is_refused(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "ckpt")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "_delimiter_"]
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"lacks the GPT-1 special token\(s\) \['_delimiter_'\]"):
        validate_checkpoint(folder)


def test_dry_run_lists_files_and_sizes_without_network(trained, tmp_path, monkeypatch, hub):
    _, output_dir, _ = trained
    folder = _copy(output_dir, tmp_path / "run")
    (folder / "README.md").unlink()
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents.1.host").write_bytes(b"log")
    (folder / "train.log").write_text("step 1\n")
    before, requests = folder_hash(folder), len(hub.requests)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be contacted anyway
    monkeypatch.delenv("HF_TOKEN")

    result = push_folder(folder, FOLDER_REPO, dry_run=True, card_kwargs={"task": "sst2"})
    paths = {f.path: f for f in result.files}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } | CODE_FILES <= set(paths)
    assert paths["README.md"].rendered and not (folder / "README.md").exists()
    assert paths["model.safetensors"].size == (folder / "model.safetensors").stat().st_size
    assert not any(p.startswith(("checkpoint-", "runs/")) or p.endswith((".log", ".bin", ".pt", ".pth")) for p in paths)
    assert "training_args.bin" not in paths  # a pickle
    assert any(p.name.startswith("checkpoint-") for p in folder.iterdir())  # there were checkpoints to skip
    summary = result.summary()
    assert summary.startswith(f"Would upload {len(paths)} file(s)") and "model.safetensors" in summary
    assert len(hub.requests) == requests and folder_hash(folder) == before


def test_ignore_patterns_cover_training_state(tmp_path):
    for relative in [
        "checkpoint-10/optimizer.pt",
        "checkpoint-10/trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state_0.pth",
        "training_args.bin",
        "trainer_state.json",
        "runs/x/events.out.tfevents.1",
        "logs/train.txt",
        "debug.log",
        "pytorch_model.bin",
        "__pycache__/m.cpython-311.pyc",
        ".git/HEAD",
        "_checkpoint-staging/checkpoint-12/model.safetensors",
        "config.json",
        "eval_results.json",
        "training_curves.png",
    ]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    assert [f.path for f in list_upload_files(tmp_path)] == [
        "config.json",
        "eval_results.json",
        "trainer_state.json",
        "training_curves.png",  # the run's log is kept
    ]
    assert "checkpoint-*" in IGNORE_PATTERNS


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------


def test_rendered_card_of_a_finetuned_checkpoint(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "ckpt")
    settings = {
        "task": "sst2",
        "model": "openai-community/openai-gpt",
        "learning_rate": 6.25e-5,
        "lm_coef": 0.5,
        "batch_size_per_device": 32,
        "epochs": 3.0,
    }
    results = {
        "eval_accuracy": 0.9125,
        "eval_loss": 0.25,
        "eval_runtime": 1.0,
        "epoch": 3.0,
        "task": "sst2",
        "settings": settings,
    }
    (folder / "eval_results.json").write_text(json.dumps(results))

    card = render_model_card(folder, repo_id=f"{USER}/gpt1-sst2")
    assert isinstance(card, ModelCard)
    metadata = _card_metadata(str(card))
    assert REQUIRED_CARD_KEYS <= set(metadata)
    assert metadata["library_name"] == "transformers" and metadata["license"] == "mit"
    assert metadata["pipeline_tag"] == "text-classification" and "gpt1" in metadata["tags"]
    assert metadata["datasets"] == ["nyu-mll/glue"] and metadata["base_model"] == "openai-community/openai-gpt"
    (result,) = metadata["model-index"][0]["results"]
    assert result["dataset"] == {"name": "GLUE SST-2", "type": "nyu-mll/glue", "config": "sst2", "split": "validation"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.9125}]  # loss/runtime/epoch are not results
    text = card.text
    assert "| learning_rate | 6.25e-05 |" in text and "| lm_coef | 0.5 |" in text  # the hyperparameters
    assert "Improving Language Understanding by Generative Pre-Training" in text and "radford2018" in text
    assert f'from_pretrained("{USER}/gpt1-sst2")' in text or f'model="{USER}/gpt1-sst2"' in text
    # The same card scripts/finetune.py writes: one template, one function.
    from hf_gpt1.finetuning import MODEL_CARD_TEMPLATE

    assert "Model card template of hf-gpt1" in MODEL_CARD_TEMPLATE.read_text() and "Model card template" in text


def test_rendered_card_of_a_checkpoint_without_task(tmp_path, tokenizer):
    model = hf_gpt1.GPT1ForCausalLM(tiny_gpt1_config())
    add_special_tokens(model, tokenizer)
    model.save_pretrained(tmp_path)
    (tmp_path / "eval_results.json").write_text(json.dumps({"eval_loss": 3.0, "epoch": 1.0}))
    card = render_model_card(tmp_path, repo_id=f"{USER}/gpt1-lm", datasets="tiny_shakespeare")
    metadata = _card_metadata(str(card))
    assert metadata["pipeline_tag"] == "text-generation" and metadata["library_name"] == "transformers"
    assert metadata["license"] == "mit" and metadata["datasets"] == ["tiny_shakespeare"]
    metrics = metadata["model-index"][0]["results"][0]["metrics"]
    assert metrics == [{"type": "perplexity", "value": round(2.718281828459045**3, 4)}]
    assert "AutoModelForCausalLM" in card.text and "radford2018improving" in card.text
    assert "model_name" not in _card_metadata(str(render_model_card(tmp_path)))  # no results: no model-index name


def test_pretraining_output_folder(tmp_path, tokenizer):
    """A scripts/pretrain.py output folder: card from pretrain_run.json + log.jsonl; caches and checkpoints skipped."""
    model = hf_gpt1.GPT1ForCausalLM(tiny_gpt1_config())
    add_special_tokens(model, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    run = {
        "format": 1,
        "model_type": "gpt1",
        "corpus": "files:abc",
        "block_size": 64,
        "batch_size": 8,
        "seed": 42,
        "val_fraction": 0.01,
        "gradient_accumulation_steps": 1,
        "num_processes": 1,
        "hyperparameters": {"learning_rate": 2.5e-4, "warmup_steps": 20, "max_steps": 200},
    }
    (tmp_path / "pretrain_run.json").write_text(json.dumps(run))
    records = [
        {"step": 100, "train_loss": 5.0},
        {"step": 200, "val_loss": 4.0, "val_perplexity": 54.598},
        {"step": 200, "train_loss": 4.1},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for leftover in [
        "data-cache/tokens-1234.npy",
        "checkpoint-200/pretrain_state.json",
        ".final-99/config.json",
        "checkpoint-300.tmp/model.safetensors",
    ]:
        (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / leftover).write_bytes(b"x")

    result = push_folder(tmp_path, f"{USER}/gpt1-lm", dry_run=True, card_kwargs={"datasets": "tiny_shakespeare"})
    assert {f.path for f in result.files} == {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "pretrain_run.json",
        "log.jsonl",
    } | CODE_FILES
    card = render_model_card(tmp_path, repo_id=f"{USER}/gpt1-lm", datasets="tiny_shakespeare")
    metadata = _card_metadata(str(card))
    assert metadata["pipeline_tag"] == "text-generation" and metadata["datasets"] == ["tiny_shakespeare"]
    (entry,) = metadata["model-index"][0]["results"]
    assert entry["metrics"] == [{"type": "perplexity", "value": 54.598}]
    assert entry["dataset"]["split"] == "validation (last 0.01 of the token windows)"
    assert "| learning_rate | 0.00025 |" in card.text and "| block_size | 64 |" in card.text
    assert "| global_step | 200 |" in card.text and "model.generate" in card.text


# ----------------------------------------------------------------------------------------------------------------------
# Pushing: Trainer(push_to_hub=True), model/tokenizer.push_to_hub, push_folder
# ----------------------------------------------------------------------------------------------------------------------


def test_trainer_push_to_hub(hub, trained):
    trainer, output_dir, metrics = trained
    titles = [c.title for c in hub.commits(TRAINER_REPO)]
    assert titles[0] == "Model save" and titles[-1] == "initial commit"
    assert "Training in progress, step 2" in titles

    # Already the first checkpoint push is a loadable repo: code that auto_map points to, tokenizer, card.
    first = next(c for c in reversed(hub.commits(TRAINER_REPO)) if c.title == "Training in progress, step 2")
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} | CODE_FILES <= set(first.files)
    _check_auto_map_resolves(first.files)

    files = hub.files(TRAINER_REPO)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "eval_results.json",
    } | CODE_FILES <= set(files)
    assert not any(path.startswith("checkpoint-") or path.startswith("_") for path in files)
    _check_auto_map_resolves(files)
    _check_tokenizer_files(files)

    metadata = _card_metadata(files["README.md"].decode())
    assert REQUIRED_CARD_KEYS <= set(metadata)
    assert metadata["base_model"] == "openai-community/openai-gpt" and metadata["pipeline_tag"] == "text-classification"
    assert metadata["model-index"][0]["name"] == TRAINER_REPO
    (result,) = metadata["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "accuracy", "value": round(metrics["eval_accuracy"], 4)}]
    body = files["README.md"].decode()
    assert f"| learning_rate | {trainer.args.learning_rate} |" in body and "| global_step | 4 |" in body
    assert "radford2018improving" in body
    assert (output_dir / "README.md").read_bytes() == files["README.md"]  # local and Hub cards agree


def test_attach_model_card_overrides_by_subclass_not_by_patching(trained, tmp_path):
    trainer = trained[0]
    # the card comes from the class (GPT1CardTrainerMixin.create_model_card), not from an attribute on the instance
    assert "create_model_card" not in vars(trainer)
    plain = Trainer(model=trainer.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    with pytest.raises(TypeError, match="GPT1HubTrainer"):
        attach_model_card(plain, task="sst2")
    assert "create_model_card" not in vars(plain)


def test_model_and_tokenizer_push_to_hub(hub, trained, tokenizer):
    model = trained[0].model
    model.push_to_hub(MODEL_REPO)
    tokenizer.push_to_hub(MODEL_REPO)
    files = hub.files(MODEL_REPO)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} | CODE_FILES <= set(files)
    _check_auto_map_resolves(files)
    _check_tokenizer_files(files)
    metadata = _card_metadata(files["README.md"].decode())  # our card replaced transformers' generic one
    assert REQUIRED_CARD_KEYS - {"model-index", "datasets", "base_model"} <= set(metadata)
    assert metadata["library_name"] == "transformers" and "gpt1" in metadata["tags"]
    assert "radford2018improving" in files["README.md"].decode()
    assert hub.commits(MODEL_REPO)[-2].title != "GPT-1 model card (hf-gpt1)"  # the weights came first


def test_push_folder(hub, trained, tmp_path):
    _, output_dir, metrics = trained
    folder = _copy(output_dir, tmp_path / "run")
    (folder / "README.md").unlink()  # rendered by push_folder
    result = push_folder(
        folder,
        FOLDER_REPO,
        private=True,
        commit_message="Publish GPT-1 SST-2",
        card_kwargs={"task": "sst2", "base_model": "openai-community/openai-gpt"},
    )

    files = hub.files(FOLDER_REPO)
    assert set(files) == {f.path for f in result.files} | {".gitattributes"}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "eval_results.json",
    } | CODE_FILES <= set(files)
    assert not any(p.startswith("checkpoint-") or p in ("training_args.bin", "trainer_state.json") for p in files)
    for path in files.keys() - {".gitattributes", "README.md"}:
        assert files[path] == (folder / path).read_bytes(), path
    assert (folder / "README.md").read_bytes() == files["README.md"]  # the card is kept locally too
    _check_auto_map_resolves(files)
    _check_tokenizer_files(files)
    assert hub.repo(FOLDER_REPO).private
    assert [c.title for c in hub.commits(FOLDER_REPO)] == ["Publish GPT-1 SST-2", "initial commit"]
    assert result.commit_oid == hub.commits(FOLDER_REPO)[0].oid and result.repo_id == FOLDER_REPO

    metadata = _card_metadata(files["README.md"].decode())
    assert REQUIRED_CARD_KEYS <= set(metadata)
    (entry,) = metadata["model-index"][0]["results"]
    assert entry["metrics"] == [{"type": "accuracy", "value": round(metrics["eval_accuracy"], 4)}]

    # Pushing again (the card is now the folder's own) makes a second commit with the same card.
    push_folder(folder, FOLDER_REPO, commit_message="again")
    assert hub.files(FOLDER_REPO)["README.md"] == files["README.md"]


def test_push_model(hub, trained, tokenizer):
    result = push_model(trained[0].model, tokenizer, PUSH_MODEL_REPO, card_kwargs={"task": "sst2"})
    files = hub.files(PUSH_MODEL_REPO)
    assert set(files) == {f.path for f in result.files} | {".gitattributes"}
    assert [c.title for c in hub.commits(PUSH_MODEL_REPO)] == ["Upload GPT-1 checkpoint", "initial commit"]
    _check_auto_map_resolves(files)
    _check_tokenizer_files(files)
    metadata = _card_metadata(files["README.md"].decode())
    assert {"library_name", "pipeline_tag", "tags", "license", "datasets"} <= set(metadata)
    assert "model-index" not in metadata  # no eval_results.json in an in-memory model: no results to report


def test_repo_name_without_namespace_and_missing_branch(hub, model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "ckpt")
    result = push_folder(folder, "bare-name", card_kwargs={"task": "sst2"})
    assert result.repo_id == f"{USER}/bare-name"  # the token's namespace
    card = hub.files(f"{USER}/bare-name")["README.md"].decode()
    assert f'model="{USER}/bare-name"' in card  # the card names the repo it lives in

    other = _copy(model_dir, tmp_path / "other")
    before = folder_hash(other)
    with pytest.raises(HubPushError, match="branch does not exist") as error:
        push_folder(other, f"{USER}/bare-name", revision="no-such-branch")
    assert error.value.status == 404 and folder_hash(other) == before


def test_auto_generated_card_is_replaced_but_a_written_one_is_kept(hub, model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "ckpt")
    generic = ModelCard.from_template(
        ModelCard.card_data_class(library_name="transformers"),
        model_description="This is the model card of a 🤗 transformers model that has been pushed on the Hub. "
        "This model card has been automatically generated.",
    )
    generic.save(folder / "README.md")
    result = push_folder(folder, f"{USER}/replaced-card", dry_run=True)
    assert next(f for f in result.files if f.path == "README.md").rendered

    (folder / "README.md").write_text("---\nlicense: mit\nlibrary_name: transformers\n---\n# My own card\n")
    result = push_folder(folder, f"{USER}/own-card")
    assert not next(f for f in result.files if f.path == "README.md").rendered
    assert hub.files(f"{USER}/own-card")["README.md"].endswith(b"# My own card\n")


# ----------------------------------------------------------------------------------------------------------------------
# Errors: clear messages, local folder untouched
# ----------------------------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_without_token(hub, model_dir, tmp_path, monkeypatch):
    folder = _copy(model_dir, tmp_path / "ckpt")
    before, requests = folder_hash(folder), len(hub.requests)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubPushError) as error:
        push_folder(folder, f"{USER}/no-token")
    assert error.value.reason == "no_token"
    message = str(error.value)
    assert "no Hugging Face token" in message and "huggingface-cli login" in message and "HF_TOKEN" in message
    assert folder_hash(folder) == before and len(hub.requests) == requests


def test_push_with_an_invalid_token(hub, model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "ckpt")
    before = folder_hash(folder)
    with pytest.raises(HubPushError) as error:
        push_folder(folder, f"{USER}/bad-token", token="hf_not_a_real_token")
    assert error.value.reason == "unauthorized" and error.value.status == 401
    assert "huggingface-cli login" in str(error.value) and "HF_TOKEN" in str(error.value)
    assert error.value.__cause__ is not None  # the huggingface_hub exception, chained
    assert folder_hash(folder) == before


@pytest.mark.parametrize(
    "repo_id, token",
    [(f"{OTHER_USER}/not-mine", None), (f"{USER}/read-only-token", READ_TOKEN)],
    ids=["other-namespace", "read-only-token"],
)
def test_push_without_permission(hub, model_dir, tmp_path, repo_id, token):
    folder = _copy(model_dir, tmp_path / "ckpt")
    before = folder_hash(folder)
    with pytest.raises(HubPushError) as error:
        push_folder(folder, repo_id, token=token)
    assert error.value.reason == "forbidden" and error.value.status == 403
    message = str(error.value)
    assert "permission denied" in message and f"namespace '{repo_id.split('/')[0]}'" in message
    assert "write" in message and str(folder) in message
    from huggingface_hub.errors import HfHubHTTPError

    assert isinstance(error.value.__cause__, HfHubHTTPError)
    assert folder_hash(folder) == before
    with pytest.raises(Exception):  # noqa: B017  (the local server's client error type is not the point)
        hub.repo(repo_id)  # nothing was created


def test_push_with_the_network_down(hub, model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    folder = _copy(model_dir, tmp_path / "ckpt")
    before = folder_hash(folder)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(HubPushError) as error:
        push_folder(folder, f"{USER}/offline")
    assert error.value.reason == "network"
    message = str(error.value)
    assert "unreachable" in message and "network connection" in message and endpoint in message
    assert folder_hash(folder) == before


def test_push_in_offline_mode(hub, model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    folder = _copy(model_dir, tmp_path / "ckpt")
    before, requests = folder_hash(folder), len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError) as error:
        push_folder(folder, f"{USER}/offline-mode")
    assert error.value.reason == "offline" and "HF_HUB_OFFLINE" in str(error.value)
    assert folder_hash(folder) == before and len(hub.requests) == requests


def test_check_hub_access_before_training(hub, monkeypatch):
    import huggingface_hub.constants as constants

    requests = len(hub.requests)
    assert check_hub_access(f"{USER}/new-model") == f"{USER}/new-model"
    assert check_hub_access("new-model") == f"{USER}/new-model"
    assert check_hub_access("test-org/shared") == "test-org/shared"  # an organization of the user
    assert not any(r.method == "POST" for r in hub.requests[requests:])  # nothing was created

    cases = [
        (dict(repo_id=f"{OTHER_USER}/x"), "forbidden", f"namespace '{OTHER_USER}'"),
        (dict(repo_id=f"{USER}/x", token=READ_TOKEN), "forbidden", "read-only"),
        (dict(repo_id=f"{USER}/x", token="hf_not_a_real_token"), "unauthorized", "huggingface-cli login"),
    ]
    for kwargs, reason, fragment in cases:
        with pytest.raises(HubPushError) as error:
            check_hub_access(kwargs.pop("repo_id"), **kwargs)
        assert error.value.reason == reason and fragment in str(error.value), str(error.value)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubPushError, match="no Hugging Face token found") as error:
        check_hub_access(f"{USER}/x")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubPushError, match="unreachable") as error:
        check_hub_access(f"{USER}/x", token=hub.token)
    assert error.value.reason == "network"


def test_failed_upload_removes_the_card_it_wrote(hub, model_dir, tmp_path, monkeypatch):
    """The repo is created, then the upload itself fails: the README.md written for it is removed again."""
    from huggingface_hub import HfApi

    folder = _copy(model_dir, tmp_path / "ckpt")
    before = folder_hash(folder)

    def dropped_connection(self, **kwargs):
        assert (Path(kwargs["folder_path"]) / "README.md").is_file()  # the card was there for the upload
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(HfApi, "upload_folder", dropped_connection)
    with pytest.raises(HubPushError) as error:
        push_folder(folder, f"{USER}/dropped")
    assert error.value.reason == "network" and "upload the files" in str(error.value)
    assert folder_hash(folder) == before


# ----------------------------------------------------------------------------------------------------------------------
# Loading by name in a fresh interpreter
# ----------------------------------------------------------------------------------------------------------------------

# Blocks `import hf_gpt1` in the child interpreter, as on a machine without the plugin.
_BLOCK_PLUGIN = textwrap.dedent(
    """
    import sys
    class _NoPlugin:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_gpt1" or name.startswith("hf_gpt1."):
                raise ImportError("hf_gpt1 is not installed here")
    sys.meta_path.insert(0, _NoPlugin())
    """
)

_LOAD_BY_NAME = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    repos, inputs_path, out_dir, plugin = PARAMS["repos"], PARAMS["inputs"], PARAMS["out_dir"], PARAMS["plugin"]
    if plugin:
        import hf_gpt1
        kwargs = {}
    else:
        try:
            import hf_gpt1
            raise SystemExit("the plugin was importable")
        except ImportError:
            kwargs = {"trust_remote_code": True}
    inputs = torch.load(inputs_path)
    report = {}
    for repo in repos:
        model = AutoModelForSequenceClassification.from_pretrained(repo, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(repo, **kwargs)
        with torch.no_grad():
            logits = model(**inputs).logits
        torch.save(logits, f"{out_dir}/{repo.replace('/', '--')}.pt")
        single = tokenizer("a gripping film").input_ids
        pair = tokenizer("a man plays", "someone makes music").input_ids
        report[repo] = {
            "model_module": type(model).__module__,
            "model_class": type(model).__name__,
            "tokenizer_class": type(tokenizer).__name__,
            "special": [tokenizer.bos_token, tokenizer.sep_token, tokenizer.cls_token, tokenizer.pad_token],
            "single": tokenizer.convert_ids_to_tokens(single),
            "pair": tokenizer.convert_ids_to_tokens(pair),
            "batch_ids": tokenizer(SENTENCES, padding=True, return_tensors="pt").input_ids.tolist(),
        }
    report["plugin_imported"] = "hf_gpt1" in sys.modules
    print(json.dumps(report))
    """
).replace("SENTENCES", repr(SENTENCES))


@pytest.mark.slow
@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "remote-code"])
def test_load_by_name_in_a_fresh_interpreter(hub, trained, tokenizer, tmp_path, plugin):
    """Every published repo loads by name and gives the pushed model's logits and the GPT-1 tokenizer framing."""
    # The repos of the other tests (pushed in this module); push the ones missing when this test runs alone.
    model = trained[0].model
    existing = {repo for repo in (MODEL_REPO, FOLDER_REPO, PUSH_MODEL_REPO) if _exists(hub, repo)}
    if MODEL_REPO not in existing:
        model.push_to_hub(MODEL_REPO)
        tokenizer.push_to_hub(MODEL_REPO)
    if FOLDER_REPO not in existing:
        push_folder(trained[1], FOLDER_REPO)
    if PUSH_MODEL_REPO not in existing:
        push_model(model, tokenizer, PUSH_MODEL_REPO, card_kwargs={"task": "sst2"})
    repos = [TRAINER_REPO, MODEL_REPO, FOLDER_REPO, PUSH_MODEL_REPO]

    inputs = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    before = len(hub.requests)
    home = tmp_path / "fresh_hf_home"  # empty cache: everything is downloaded from the server
    params = {"repos": repos, "inputs": str(tmp_path / "inputs.pt"), "out_dir": str(tmp_path), "plugin": plugin}
    code = ("" if plugin else _BLOCK_PLUGIN) + f"PARAMS = {params!r}\n" + _LOAD_BY_NAME
    result = run_python(
        code,
        env={**hub_env(hub, home=home), "PYTHONPATH": "", "HF_MODULES_CACHE": str(home / "modules")},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("plugin_imported") is plugin
    expected_batch = inputs["input_ids"].tolist()
    for repo in repos:
        info = report[repo]
        assert info["model_class"] == "GPT1ForSequenceClassification"
        assert info["model_module"].startswith("hf_gpt1." if plugin else "transformers_modules"), info["model_module"]
        assert info["tokenizer_class"] == "OpenAIGPTTokenizer"
        assert info["special"] == ["_start_", "_delimiter_", "_classify_", "<pad>"]
        assert info["single"] == ["_start_", "a</w>", "gripping</w>", "film</w>", "_classify_"]
        assert info["pair"][0] == "_start_" and "_delimiter_" in info["pair"] and info["pair"][-1] == "_classify_"
        assert info["batch_ids"] == expected_batch
        torch.testing.assert_close(torch.load(tmp_path / f"{repo.replace('/', '--')}.pt"), expected, rtol=0, atol=1e-5)
    downloads = [r for r in hub.requests[before:] if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert len(downloads) == len(repos)


def _exists(hub: HubServer, repo_id: str) -> bool:
    try:
        hub.repo(repo_id)
        return True
    except Exception:
        return False
