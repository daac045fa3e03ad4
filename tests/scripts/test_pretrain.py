"""End-to-end tests of scripts/pretrain.py: real subprocesses (python and `accelerate launch`), the real shared corpus
and GPT-1 BPE, real signals. Models are tiny (2 layers, width 32-64) so each run takes seconds on 2 CPU cores; the
40k-token softmax dominates the cost, so batches are small too."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "pretrain.py"
ACCELERATE = Path(sys.executable).with_name("accelerate")
CPU_2PROC = REPO_ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"

pytestmark = pytest.mark.slow

# One thread per process: on a shared 2-core machine oversubscribed OpenMP threads make every step several times
# slower, and a fixed thread count keeps float reductions identical between the runs a test compares.
ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TINY = {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 64}


def _free_port() -> int:
    """torchrun's default port 29500 may be taken by another launch running on the machine at the same time."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _config(tmp_path: Path, name: str = "tiny.json", **fields) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({**TINY, **fields}), encoding="utf-8")
    return str(path)


def _args(corpus, config, out, tokenizer_dir, *extra) -> list[str]:
    return [
        "--corpus", str(corpus), "--model-config", str(config), "--output-dir", str(out),
        "--tokenizer", str(tokenizer_dir), "--report-to", "none", *map(str, extra),
    ]


def run_pretrain(args: list[str], timeout: int = 600, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(SCRIPT), *args]
    return subprocess.run(command, env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    return result


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def _train_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in _records(out) if "train_loss" in r}


def _val_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["val_loss"] for r in _records(out) if "val_loss" in r}


@pytest.fixture(scope="module")
def shakespeare(shared_data) -> Path:
    return shared_data / "corpus" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One tokenised/packed cache for the runs of this module (the cache is keyed by content, so sharing is safe)."""
    return tmp_path_factory.mktemp("pretrain-data-cache")


# ----------------------------------------------------------------------------------------------------------------------
# It learns, and the result is a loadable, generating checkpoint
# ----------------------------------------------------------------------------------------------------------------------


def test_tiny_model_learns_shakespeare_and_generates(tmp_path, shakespeare, tokenizer_dir, data_cache):
    out = tmp_path / "run"
    config = _config(tmp_path, n_embd=64)
    start = time.perf_counter()
    result = _ok(run_pretrain(_args(
        shakespeare, config, out, tokenizer_dir,
        "--block-size", 64, "--batch-size", 8, "--max-steps", 60, "--learning-rate", 3e-3, "--warmup-steps", 10,
        "--eval-every", 30, "--eval-windows", 32, "--log-every", 10, "--save-every", 30, "--val-fraction", 0.02,
        "--data-cache-dir", data_cache, "--report-to", "tensorboard",
    )))
    elapsed = time.perf_counter() - start

    val = _val_losses(out)
    assert sorted(val) == [0, 30, 60]
    initial_ppl, final_ppl = math.exp(val[0]), math.exp(val[60])
    assert initial_ppl > 20_000  # an untrained model is near uniform over the 40,482 tokens
    assert final_ppl < 0.5 * initial_ppl, (initial_ppl, final_ppl)
    assert val[60] < val[30] < val[0]
    train = _train_losses(out)
    assert sorted(train) == list(range(10, 61, 10)) and train[60] < train[10]
    assert all(r["tokens_per_second"] > 0 for r in _records(out) if "train_loss" in r)
    assert _records(out)[-2]["tokens_seen"] == 60 * 8 * 64
    assert "perplexity" in result.stdout and str(out) in result.stdout

    # artefacts: checkpoints (last K), run identity, loss curve, TensorBoard events
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-30", "checkpoint-60"]
    state = json.loads((out / "checkpoint-60" / "pretrain_state.json").read_text())
    assert state["step"] == 60 and state["micro_batches_per_process"] == 60
    assert json.loads((out / "pretrain_run.json").read_text())["block_size"] == 64
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))

    # the final model loads through the Auto classes and generates
    import hf_gpt1  # noqa: F401  (registers model_type "gpt1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "GPT1ForCausalLM" and model.config.vocab_size == len(tokenizer) == 40482
    prompt = tokenizer("first citizen : before we proceed any further , hear me speak .", add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new_tokens = generated[0, prompt["input_ids"].shape[1] :]
    assert new_tokens.shape[0] == 20
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert text.strip(), "generation produced no text"
    # what it generates reflects the corpus: greedy decoding from the trained model stays among the corpus's most
    # frequent tokens (an untrained model's picks are spread over all 40k ids)
    import numpy as np

    stream = np.load(next(data_cache.glob("tokens-*.npy")), mmap_mode="r")
    frequent = set(np.argsort(np.bincount(stream, minlength=len(tokenizer)))[-100:].tolist())
    share = sum(int(t) in frequent for t in new_tokens) / len(new_tokens)
    assert share >= 0.8, (share, text)
    print(f"learning run: {elapsed:.0f}s, val ppl {initial_ppl:.0f} -> {final_ppl:.0f}; sample: {text!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Scale-out: 2 processes == 1 process with the same global batch
# ----------------------------------------------------------------------------------------------------------------------


def test_two_processes_and_accumulation_match_one_process(tmp_path, shakespeare, tokenizer_dir, data_cache):
    """Three ways to make an update of 8 windows follow the same loss trajectory (dropout 0):
    1 process x batch 8; `accelerate launch` with 2 CPU processes x batch 4 (DDP); 1 process x batch 4 x 2
    accumulation steps (`accelerator.accumulate`, here with activation checkpointing, which must not change the math).

    Tolerance: |loss difference| <= 1e-4 per step, final weights within 1e-5. Only the order of float reductions
    differs (DDP and accumulation average two half-batch gradients); observed differences are ~1e-6.
    """
    config = _config(tmp_path)
    common = ["--block-size", 32, "--max-steps", 8, "--learning-rate", 3e-3, "--warmup-steps", 2, "--dropout", 0,
              "--log-every", 1, "--eval-every", 4, "--eval-windows", 16, "--save-every", 0, "--data-cache-dir", data_cache]
    single, double, accumulated = tmp_path / "one", tmp_path / "two", tmp_path / "accumulated"
    _ok(run_pretrain(_args(shakespeare, config, single, tokenizer_dir, "--batch-size", 8, *common)))
    launcher = [str(ACCELERATE), "launch", "--config_file", str(CPU_2PROC), "--main_process_port", str(_free_port())]
    result = _ok(run_pretrain(_args(shakespeare, config, double, tokenizer_dir, "--batch-size", 4, "--cpu", *common),
                              launcher=launcher))
    _ok(run_pretrain(_args(shakespeare, config, accumulated, tokenizer_dir, "--batch-size", 4,
                           "--gradient-accumulation-steps", 2, "--activation-checkpointing", *common)))

    # really two processes (accelerate can silently start one), and each rank wrote its RNG state
    assert json.loads((double / "pretrain_run.json").read_text())["num_processes"] == 2
    assert "2 process(es) (MULTI_CPU" in result.stderr
    assert sorted(p.name for p in (double / "checkpoint-8").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]

    one = _train_losses(single)
    assert sorted(one) == list(range(1, 9))
    assert one[8] < one[1] - 0.05  # the trajectory is not trivially flat
    reference_weights, v1 = load_file(single / "model.safetensors"), _val_losses(single)
    assert sorted(v1) == [0, 4, 8]
    for other in (double, accumulated):
        losses = _train_losses(other)
        assert sorted(losses) == sorted(one)
        for step in one:
            assert abs(one[step] - losses[step]) <= 1e-4, (other.name, step, one[step], losses[step])
        v2 = _val_losses(other)
        assert sorted(v2) == sorted(v1) and all(abs(v1[s] - v2[s]) <= 1e-4 for s in v1), (other.name, v1, v2)
        weights = load_file(other / "model.safetensors")
        for name in reference_weights:
            torch.testing.assert_close(weights[name], reference_weights[name], rtol=0, atol=1e-5)


def test_init_from_openai_gpt_checkpoint(tmp_path, shakespeare, tokenizer_dir, data_cache):
    """--init-from an `openai-gpt` checkpoint: converted on load, vocabulary grown to the special tokens, continued.
    With learning rate 0 the saved weights must be exactly the converted source weights."""
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    source = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=40478, n_positions=64, n_embd=32, n_layer=2, n_head=4))
    source.save_pretrained(tmp_path / "openai")
    out = tmp_path / "run"
    args = ["--corpus", shakespeare, "--init-from", tmp_path / "openai", "--tokenizer", tokenizer_dir, "--output-dir", out,
            "--report-to", "none", "--block-size", 32, "--batch-size", 4, "--max-steps", 2, "--learning-rate", 0,
            "--eval-every", 0, "--eval-windows", 8, "--data-cache-dir", data_cache]
    _ok(run_pretrain([str(a) for a in args]))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt1" and config["vocab_size"] == 40482 and config["n_embd"] == 32
    weights = load_file(out / "model.safetensors")
    torch.testing.assert_close(weights["transformer.tokens_embed.weight"][:40478], source.transformer.tokens_embed.weight,
                               rtol=0, atol=0)
    torch.testing.assert_close(weights["transformer.h.0.mlp.c_fc.weight"], source.transformer.h[0].mlp.c_fc.weight.t(),
                               rtol=0, atol=0)
    assert json.loads((out / "pretrain_run.json").read_text())["init_from"] == str((tmp_path / "openai").resolve())


# ----------------------------------------------------------------------------------------------------------------------
# Interruptions: SIGKILL + resume is exact; SIGTERM saves first
# ----------------------------------------------------------------------------------------------------------------------


def _wait_for(predicate, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"run ended (exit {process.returncode}) before {what}\n{out[-2000:]}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, shakespeare, tokenizer_dir):
    """Dropout stays on (0.1), so equality also proves the RNG state is restored. The corpus is a small excerpt
    (~11 micro-batches per epoch) and an update is 3 micro-batches, so the run crosses epoch boundaries inside
    updates and the resumed run has to skip into the middle of a later epoch: the data position is exact too."""
    corpus = tmp_path / "excerpt.txt"
    corpus.write_bytes(shakespeare.read_bytes()[:6500])  # 46 training windows: 11 batches of 4 per epoch
    config = _config(tmp_path)  # dropout 0.1 (the GPT1Config default)
    common = ["--block-size", 32, "--batch-size", 4, "--gradient-accumulation-steps", 3, "--max-steps", 12,
              "--learning-rate", 3e-3, "--warmup-steps", 2, "--log-every", 1, "--eval-every", 6, "--save-every", 4,
              "--save-total-limit", 0, "--val-fraction", 0.1]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _ok(run_pretrain(_args(corpus, config, reference, tokenizer_dir, *common)))
    epochs = {r["epoch"] for r in _records(reference) if "epoch" in r}
    assert epochs == {0, 1, 2, 3}, epochs  # 36 micro-batches over ~11-batch epochs

    command = [sys.executable, str(SCRIPT), *_args(corpus, config, interrupted, tokenizer_dir, *common)]
    process = subprocess.Popen(command, env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (interrupted / "checkpoint-4").is_dir(), process, 300, "checkpoint-4")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL  # it really was killed mid-run, not finished
    assert not (interrupted / "config.json").exists()  # no final model
    assert not (interrupted / "checkpoint-12").exists()

    latest = max(int(p.name.split("-")[1]) for p in interrupted.glob("checkpoint-*") if not p.name.endswith(".tmp"))
    # a plain rerun refuses to clobber the interrupted run; --resume continues it
    refused = run_pretrain(_args(corpus, config, interrupted, tokenizer_dir, *common))
    assert refused.returncode == 2 and "already holds a pretraining run" in refused.stderr
    resumed = _ok(run_pretrain(_args(corpus, config, interrupted, tokenizer_dir, *common, "--resume")))
    assert f"Resumed from {interrupted / f'checkpoint-{latest}'} at update {latest}" in resumed.stderr

    expected, actual = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
    assert _train_losses(interrupted) == _train_losses(reference)  # same trajectory, log rewound on resume
    assert _val_losses(interrupted) == _val_losses(reference)


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tmp_path, shakespeare, tokenizer_dir, data_cache):
    """Also runs under bf16 autocast where the CPU supports it (AVX-512-BF16/AMX), so that path is exercised."""
    from accelerate.utils import is_bf16_available

    out = tmp_path / "run"
    precision = "bf16" if is_bf16_available() else "no"
    args = _args(shakespeare, _config(tmp_path), out, tokenizer_dir, "--block-size", 32, "--batch-size", 4,
                 "--max-steps", 500, "--log-every", 1, "--eval-every", 0, "--save-every", 0,
                 "--data-cache-dir", data_cache, "--mixed-precision", precision)
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=_env(), cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "log.jsonl").is_file() and len(_train_losses(out)) >= 2, process, 300, "two updates")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]

    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and not checkpoints[0].name.endswith(".tmp")
    step = int(checkpoints[0].name.split("-")[1])
    assert 2 <= step < 500
    assert f"stopped by SIGTERM at update {step}/500; saved checkpoint {checkpoints[0]}" in stderr
    assert "--resume auto" in stderr
    state = json.loads((checkpoints[0] / "pretrain_state.json").read_text())
    assert state["step"] == step and (checkpoints[0] / "model.safetensors").is_file()
    assert (checkpoints[0] / "optimizer.bin").is_file() and (checkpoints[0] / "random_states_0.pkl").is_file()
    assert not (out / "config.json").exists()  # interrupted runs do not pretend to be finished models
    assert f"mixed precision {precision}" in stderr
    assert json.loads((out / "pretrain_run.json").read_text())["hyperparameters"]["mixed_precision"] == precision
    assert all(math.isfinite(loss) for loss in _train_losses(out).values())


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, shakespeare, tokenizer_dir, data_cache):
    out = tmp_path / "run"
    # lr 1e30 with no warmup: update 1 throws every weight to ~1e30, so the forward pass of update 2 overflows
    result = run_pretrain(_args(shakespeare, _config(tmp_path), out, tokenizer_dir, "--block-size", 32,
                                "--batch-size", 4, "--max-steps", 6, "--learning-rate", 1e30, "--warmup-steps", 0,
                                "--log-every", 1, "--eval-every", 0, "--save-every", 1, "--data-cache-dir", data_cache))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "non-finite loss nan at update 2" in result.stderr
    assert f"Last good checkpoint: {out / 'checkpoint-1'}" in result.stderr
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]
    assert not (out / "config.json").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: the message says what, where, and what was expected
# ----------------------------------------------------------------------------------------------------------------------


def _bad_corpus(kind: str, tmp_path: Path, shakespeare: Path) -> tuple[Path, Path, list[str]]:
    out = tmp_path / "run"
    if kind == "empty-folder":
        corpus = tmp_path / "empty"
        corpus.mkdir()
        return corpus, out, [f"Corpus folder {corpus} contains no *.txt files"]
    if kind == "non-utf8":
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "good.txt").write_bytes(shakespeare.read_bytes()[:5000])
        (corpus / "cp1252.txt").write_bytes("\u201cQuoted\u201d in Windows-1252.\n".encode("cp1252"))
        return corpus, out, [f"{corpus / 'cp1252.txt'}: byte 0x93 at offset 0", "not valid UTF-8"]
    if kind == "too-small":
        corpus = tmp_path / "small.txt"
        corpus.write_text("To be, or not to be.\n", encoding="utf-8")
        return corpus, out, [f"text file {corpus})", " tokens after tokenisation, but 64 are needed", "--block-size 32"]
    if kind == "foreign-checkpoint":
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
        (out / "model.safetensors").write_bytes(b"")
        return shakespeare, out, [f"Output folder {out} holds a model checkpoint (config.json, model_type='bert')",
                                  "--overwrite"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty-folder", "non-utf8", "too-small", "foreign-checkpoint"])
def test_bad_input_is_a_clear_error(kind, tmp_path, shakespeare, tokenizer_dir):
    corpus, out, expected = _bad_corpus(kind, tmp_path, shakespeare)
    result = run_pretrain(_args(corpus, _config(tmp_path), out, tokenizer_dir, "--block-size", 32, "--max-steps", 2),
                          timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    error_line = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error:")]
    assert error_line, result.stderr[-3000:]
    for fragment in expected:
        assert fragment in error_line[0], error_line[0]
    assert "Traceback" not in result.stderr
    if kind == "foreign-checkpoint":
        assert json.loads((out / "config.json").read_text()) == {"model_type": "bert"}  # untouched
