"""End-to-end tests of scripts/pretrain.py: real subprocesses (python and `accelerate launch`), the real shared corpus
and GPT-1 BPE, real signals, and for --push-to-hub the local Hub server of tests/hub_server.py. Models are tiny
(2 layers, width 32-64) so each run takes seconds on 2 CPU cores; the 40k-token softmax dominates the cost, so batches
are small too."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hub_server import READ_TOKEN, USER, HubUser, hub_env

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
        "--corpus",
        str(corpus),
        "--model-config",
        str(config),
        "--output-dir",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--report-to",
        "none",
        *map(str, extra),
    ]


def run_pretrain(
    args: list[str], timeout: int = 600, launcher: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(SCRIPT), *args]
    return subprocess.run(
        command, env={**_env(), **(env or {})}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    )
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
    result = _ok(
        run_pretrain(
            _args(
                shakespeare,
                config,
                out,
                tokenizer_dir,
                "--block-size",
                64,
                "--batch-size",
                8,
                "--max-steps",
                60,
                "--learning-rate",
                3e-3,
                "--warmup-steps",
                10,
                "--eval-every",
                30,
                "--eval-windows",
                32,
                "--log-every",
                10,
                "--save-every",
                30,
                "--val-fraction",
                0.02,
                "--data-cache-dir",
                data_cache,
                "--report-to",
                "tensorboard",
            )
        )
    )
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
    assert list((out / "runs").rglob("events.out.tfevents.*"))  # Trainer's TensorBoard folder, not ./runs of the cwd
    assert (out / "checkpoint-60" / "trainer_state.json").is_file()  # a transformers.Trainer checkpoint

    # the final model loads through the Auto classes and generates
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_gpt1  # noqa: F401  (registers model_type "gpt1")

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "GPT1ForCausalLM" and model.config.vocab_size == len(tokenizer) == 40482
    prompt = tokenizer(
        "first citizen : before we proceed any further , hear me speak .", add_special_tokens=False, return_tensors="pt"
    )
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
    common = [
        "--block-size",
        32,
        "--max-steps",
        8,
        "--learning-rate",
        3e-3,
        "--warmup-steps",
        2,
        "--dropout",
        0,
        "--log-every",
        1,
        "--eval-every",
        4,
        "--eval-windows",
        16,
        "--save-every",
        0,
        "--data-cache-dir",
        data_cache,
    ]
    single, double, accumulated = tmp_path / "one", tmp_path / "two", tmp_path / "accumulated"
    _ok(run_pretrain(_args(shakespeare, config, single, tokenizer_dir, "--batch-size", 8, *common)))
    launcher = [str(ACCELERATE), "launch", "--config_file", str(CPU_2PROC), "--main_process_port", str(_free_port())]
    result = _ok(
        run_pretrain(
            _args(shakespeare, config, double, tokenizer_dir, "--batch-size", 4, "--cpu", *common), launcher=launcher
        )
    )
    _ok(
        run_pretrain(
            _args(
                shakespeare,
                config,
                accumulated,
                tokenizer_dir,
                "--batch-size",
                4,
                "--gradient-accumulation-steps",
                2,
                "--activation-checkpointing",
                *common,
            )
        )
    )

    # really two processes (accelerate can silently start one), and each rank wrote its RNG state
    assert json.loads((double / "pretrain_run.json").read_text())["num_processes"] == 2
    assert "2 process(es) (MULTI_CPU" in result.stderr
    assert sorted(p.name for p in (double / "checkpoint-8").glob("rng_state*.pth")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]

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
    args = [
        "--corpus",
        shakespeare,
        "--init-from",
        tmp_path / "openai",
        "--tokenizer",
        tokenizer_dir,
        "--output-dir",
        out,
        "--report-to",
        "none",
        "--block-size",
        32,
        "--batch-size",
        4,
        "--max-steps",
        2,
        "--learning-rate",
        0,
        "--eval-every",
        0,
        "--eval-windows",
        8,
        "--data-cache-dir",
        data_cache,
    ]
    _ok(run_pretrain([str(a) for a in args]))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt1" and config["vocab_size"] == 40482 and config["n_embd"] == 32
    weights = load_file(out / "model.safetensors")
    torch.testing.assert_close(
        weights["transformer.tokens_embed.weight"][:40478], source.transformer.tokens_embed.weight, rtol=0, atol=0
    )
    torch.testing.assert_close(
        weights["transformer.h.0.mlp.c_fc.weight"], source.transformer.h[0].mlp.c_fc.weight.t(), rtol=0, atol=0
    )
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


def _kill_and_resume(make_args, reference: Path, interrupted: Path, kill_at: str) -> subprocess.CompletedProcess:
    """Run `make_args(out)` to the end in `reference`; in `interrupted`, SIGKILL it once `kill_at` exists, check that
    a plain rerun refuses the folder, then `--resume` it. Returns the resumed run (asserted successful)."""
    _ok(run_pretrain(make_args(reference)))
    command = [sys.executable, str(SCRIPT), *make_args(interrupted)]
    process = subprocess.Popen(
        command, env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: (interrupted / kill_at).is_dir(), process, 300, kill_at)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL  # it really was killed mid-run, not finished
    assert not (interrupted / "config.json").exists() and not (interrupted / "adapter_config.json").exists()
    final = max(int(p.name.split("-")[1]) for p in reference.glob("checkpoint-*"))
    assert not (interrupted / f"checkpoint-{final}").exists()

    latest = max(int(p.name.split("-")[1]) for p in interrupted.glob("checkpoint-*") if not p.name.endswith(".tmp"))
    # a plain rerun refuses to clobber the interrupted run; --resume continues it
    refused = run_pretrain(make_args(interrupted))
    assert refused.returncode == 2 and "already holds a pretraining run" in refused.stderr
    resumed = _ok(run_pretrain([*make_args(interrupted), "--resume"]))
    assert f"Resumed from {interrupted / f'checkpoint-{latest}'} at update {latest}" in resumed.stderr
    return resumed


# Shared by the kill/resume tests of full and LoRA training (see the docstring below for why this schedule).
KILL_RESUME_SCHEDULE = [
    "--block-size",
    32,
    "--batch-size",
    4,
    "--gradient-accumulation-steps",
    3,
    "--max-steps",
    14,
    "--learning-rate",
    3e-3,
    "--warmup-steps",
    2,
    "--log-every",
    1,
    "--eval-every",
    6,
    "--save-every",
    3,
    "--save-total-limit",
    0,
    "--val-fraction",
    0.1,
]


def _excerpt(tmp_path: Path, shakespeare: Path) -> Path:
    corpus = tmp_path / "excerpt.txt"
    corpus.write_bytes(shakespeare.read_bytes()[:6500])  # 46 training windows: 11 batches of 4 per epoch
    return corpus


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, shakespeare, tokenizer_dir):
    """Dropout stays on (0.1), so equality also proves the RNG state is restored. The corpus is a small excerpt
    (11 micro-batches per epoch) and an update is 3 micro-batches, so Trainer ends each epoch with a 2-batch update
    (4 updates per epoch); the kill comes after checkpoint-6, in the middle of epoch 1, and the resumed run has to
    skip into the middle of a later epoch, in that epoch's order: the data position is exact too."""
    corpus = _excerpt(tmp_path, shakespeare)
    config = _config(tmp_path)  # dropout 0.1 (the GPT1Config default)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _kill_and_resume(
        lambda out: _args(corpus, config, out, tokenizer_dir, *KILL_RESUME_SCHEDULE),
        reference,
        interrupted,
        kill_at="checkpoint-6",
    )
    epochs = {r["epoch"] for r in _records(reference) if "epoch" in r}
    assert epochs == {0, 1, 2, 3}, epochs  # 14 updates of 4 per epoch

    expected, actual = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
    assert _train_losses(interrupted) == _train_losses(reference)  # same trajectory, log rewound on resume
    assert _val_losses(interrupted) == _val_losses(reference)


def _as_version_0_1_checkpoint(checkpoint: Path) -> None:
    """Rewrite a checkpoint as 0.1's Accelerate loop wrote it (`accelerator.save_state`): model.safetensors without the
    config, optimizer.bin, scheduler.bin, random_states_0.pkl (accelerate's key names), pretrain_state.json."""
    rng = torch.load(checkpoint / "rng_state.pth", weights_only=False)
    states = {"random_state": rng["python"], "numpy_random_seed": rng["numpy"], "torch_manual_seed": rng["cpu"]}
    torch.save(states, checkpoint / "random_states_0.pkl")
    (checkpoint / "optimizer.pt").rename(checkpoint / "optimizer.bin")
    (checkpoint / "scheduler.pt").rename(checkpoint / "scheduler.bin")
    keep = {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "pretrain_state.json"}
    for path in checkpoint.iterdir():
        if path.name not in keep:
            path.unlink()


def test_a_run_checkpointed_by_version_0_1_resumes(tmp_path, shakespeare, tokenizer_dir, data_cache):
    """Upgrading to 0.2 mid-run: `--resume` on a 0.1 checkpoint upgrades it to a Trainer checkpoint and finishes the
    run with the weights an uninterrupted run reaches (dropout on: the RNG state carries over too)."""
    config = _config(tmp_path)
    schedule = ["--block-size", 32, "--batch-size", 4, "--max-steps", 8, "--learning-rate", 3e-3, "--warmup-steps", 2]
    schedule += ["--log-every", 1, "--eval-every", 4, "--eval-windows", 8, "--save-every", 4]
    schedule += ["--save-total-limit", 0, "--data-cache-dir", data_cache]
    reference, upgraded = tmp_path / "reference", tmp_path / "upgraded"
    _ok(run_pretrain(_args(shakespeare, config, reference, tokenizer_dir, *schedule)))
    _ok(run_pretrain(_args(shakespeare, config, upgraded, tokenizer_dir, *schedule)))
    for path in [*upgraded.glob("checkpoint-*"), *upgraded.glob("*.safetensors"), upgraded / "config.json"]:
        if path.name != "checkpoint-4":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    _as_version_0_1_checkpoint(upgraded / "checkpoint-4")

    result = _ok(run_pretrain([*_args(shakespeare, config, upgraded, tokenizer_dir, *schedule), "--resume"]))
    assert "Upgraded" in result.stderr and f"Resumed from {upgraded / 'checkpoint-4'} at update 4" in result.stderr
    assert (upgraded / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (upgraded / "checkpoint-4" / "optimizer.bin").exists()
    expected, actual = load_file(reference / "model.safetensors"), load_file(upgraded / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert _train_losses(upgraded) == pytest.approx(_train_losses(reference), abs=1e-6)


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tmp_path, shakespeare, tokenizer_dir, data_cache):
    """Also runs under bf16 autocast where the CPU supports it (AVX-512-BF16/AMX), so that path is exercised."""
    from accelerate.utils import is_bf16_available

    out = tmp_path / "run"
    precision = "bf16" if is_bf16_available() else "no"
    args = _args(
        shakespeare,
        _config(tmp_path),
        out,
        tokenizer_dir,
        "--block-size",
        32,
        "--batch-size",
        4,
        "--max-steps",
        500,
        "--log-every",
        1,
        "--eval-every",
        0,
        "--save-every",
        0,
        "--data-cache-dir",
        data_cache,
        "--mixed-precision",
        precision,
    )
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    assert (checkpoints[0] / "optimizer.pt").is_file() and (checkpoints[0] / "rng_state.pth").is_file()
    assert not (out / "config.json").exists()  # interrupted runs do not pretend to be finished models
    assert f"mixed precision {precision}" in stderr
    assert json.loads((out / "pretrain_run.json").read_text())["hyperparameters"]["mixed_precision"] == precision
    assert all(math.isfinite(loss) for loss in _train_losses(out).values())


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(
    tmp_path, shakespeare, tokenizer_dir, data_cache
):
    out = tmp_path / "run"
    # lr 1e30 with no warmup: update 1 throws every weight to ~1e30, so the forward pass of update 2 overflows
    result = run_pretrain(
        _args(
            shakespeare,
            _config(tmp_path),
            out,
            tokenizer_dir,
            "--block-size",
            32,
            "--batch-size",
            4,
            "--max-steps",
            6,
            "--learning-rate",
            1e30,
            "--warmup-steps",
            0,
            "--log-every",
            1,
            "--eval-every",
            0,
            "--save-every",
            1,
            "--data-cache-dir",
            data_cache,
        )
    )
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
        return (
            shakespeare,
            out,
            [f"Output folder {out} holds a model checkpoint (config.json, model_type='bert')", "--overwrite"],
        )
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty-folder", "non-utf8", "too-small", "foreign-checkpoint"])
def test_bad_input_is_a_clear_error(kind, tmp_path, shakespeare, tokenizer_dir):
    corpus, out, expected = _bad_corpus(kind, tmp_path, shakespeare)
    result = run_pretrain(
        _args(corpus, _config(tmp_path), out, tokenizer_dir, "--block-size", 32, "--max-steps", 2), timeout=300
    )
    assert result.returncode == 2, result.stderr[-3000:]
    error_line = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error:")]
    assert error_line, result.stderr[-3000:]
    for fragment in expected:
        assert fragment in error_line[0], error_line[0]
    assert "Traceback" not in result.stderr
    if kind == "foreign-checkpoint":
        assert json.loads((out / "config.json").read_text()) == {"model_type": "bert"}  # untouched


# ----------------------------------------------------------------------------------------------------------------------
# Continued pretraining with LoRA: a base pretrained by the script, then --init-from it --peft lora
# ----------------------------------------------------------------------------------------------------------------------

LORA = ["--peft", "lora", "--lora-r", 16, "--lora-alpha", 32]


@pytest.fixture(scope="module")
def lora_base(tmp_path_factory, shakespeare, tokenizer_dir) -> Path:
    """A tiny GPT-1 (gpt1-tiny's width 64, 2 layers) pretrained by the script on 40 KB of Shakespeare: a pretrain.py
    output folder (model, tokenizer, checkpoint, log, data cache), used as it is by --init-from."""
    root = tmp_path_factory.mktemp("lora-base")
    corpus = root / "base.txt"
    corpus.write_bytes(shakespeare.read_bytes()[:40_000])
    out = root / "base"
    _ok(
        run_pretrain(
            _args(
                corpus,
                _config(root, n_embd=64),
                out,
                tokenizer_dir,
                "--block-size",
                32,
                "--batch-size",
                8,
                "--max-steps",
                40,
                "--learning-rate",
                1e-2,
                "--warmup-steps",
                4,
                "--eval-every",
                0,
                "--save-every",
                0,
                "--val-fraction",
                0.05,
            )
        )
    )
    return out


@pytest.fixture(scope="module")
def lora_corpus(lora_base, shakespeare) -> Path:
    """The new text the adapter learns: one ~600-character exchange of the base's corpus, repeated 25 times. Its
    tokens are ones whose (frozen) embedding rows the base trained; a 40-update base leaves the rows of unseen tokens
    at their random initialisation, and LoRA, which keeps the embeddings frozen, could not make them predictable."""
    text = shakespeare.read_bytes()[:40_000].decode("utf-8")
    start = text.find("\n\n", 20_000) + 2
    passage = text[start : start + 700]
    passage = passage[: passage.rfind("\n\n")]
    corpus = lora_base.parent / "refrain.txt"
    corpus.write_text("\n\n".join([passage] * 25), encoding="utf-8")
    return corpus


def _lora_args(corpus: Path, base: Path, out: Path, *extra) -> list[str]:
    """No --tokenizer: the one saved next to the --init-from model is used."""
    return [
        "--corpus",
        str(corpus),
        "--init-from",
        str(base),
        "--output-dir",
        str(out),
        "--report-to",
        "none",
        *map(str, LORA),
        *map(str, extra),
    ]


@torch.no_grad()
def _mean_window_loss(model, windows: torch.Tensor) -> float:
    """What pretrain.py's validation reports: mean over windows of the mean next-token cross-entropy."""
    logits = model(input_ids=windows, use_cache=False).logits
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), windows[:, 1:], reduction="none")
    return per_token.mean(dim=1).mean().item()


def test_lora_continued_pretraining_learns_and_saves_a_reproducible_adapter(
    tmp_path, lora_base, lora_corpus, hub_server
):
    """--init-from a pretrained base --peft lora --merge-adapter --push-to-hub: the loss goes down while the base weights
    stay bit-identical; the adapter folder reproduces the run's final validation loss through PeftModel and
    AutoPeftModel; the merged model matches it within 1e-5 and is what the Hub repo receives."""
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    import hf_gpt1
    from hf_gpt1 import pretraining_corpus

    out, repo = tmp_path / "lora", "test-user/tiny-lora-lm"
    result = _ok(
        run_pretrain(
            _lora_args(
                lora_corpus,
                lora_base,
                out,
                "--block-size",
                32,
                "--batch-size",
                4,
                "--max-steps",
                60,
                "--learning-rate",
                5e-3,
                "--warmup-steps",
                3,
                "--eval-every",
                20,
                "--log-every",
                20,
                "--save-every",
                30,
                "--val-fraction",
                0.1,
                "--merge-adapter",
                "--push-to-hub",
                repo,
            ),
            env=hub_env(hub_server),
        )
    )

    # it learns: validation loss down at every evaluation, training loss down too
    val, train = _val_losses(out), _train_losses(out)
    assert sorted(val) == [0, 20, 40, 60] and val[0] > val[20] > val[40] > val[60], val
    assert val[60] < val[0] - 0.05, val
    assert train[60] < train[20], train

    # the adapter folder: LoRA weights only, the base named by its absolute path, the base's tokenizer next to it
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not names & {"config.json", "model.safetensors"}
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(lora_base.resolve())
    assert (
        adapter_config["peft_type"],
        adapter_config["task_type"],
        adapter_config["r"],
        adapter_config["lora_alpha"],
    ) == ("LORA", "CAUSAL_LM", 16, 32)
    assert set(adapter_config["target_modules"]) == {"c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"}
    adapter = load_file(out / "adapter_model.safetensors")
    assert len(adapter) == 16 and all(".lora_A." in n or ".lora_B." in n for n in adapter)
    trainable = sum(t.numel() for t in adapter.values())
    assert (
        f"trainable parameters: {trainable:,} of " in result.stdout and f"by kind: lora {trainable:,})" in result.stdout
    )
    assert json.loads((out / "pretrain_run.json").read_text())["peft"]["r"] == 16

    # only the adapter trained: the run's last checkpoint holds just the adapter (the final one's tensors), the
    # optimizer holds state for the 16 adapter tensors only, and below, the untouched --init-from base plus the
    # adapter reproduces the logged validation loss
    checkpoint_adapter = load_file(out / "checkpoint-60" / "adapter_model.safetensors")
    assert checkpoint_adapter.keys() == adapter.keys()
    assert all(torch.equal(checkpoint_adapter[name], tensor) for name, tensor in adapter.items())
    assert not (out / "checkpoint-60" / "model.safetensors").exists()
    optimizer_state = torch.load(out / "checkpoint-60" / "optimizer.pt", weights_only=True)
    assert len(optimizer_state["state"]) == 16

    # the saved adapter reproduces the run: its validation loss on the run's validation windows is the logged one
    tokenizer = hf_gpt1.load_gpt1_tokenizer(out)
    data = pretraining_corpus.prepare_corpus(
        pretraining_corpus.resolve_corpus(str(lora_corpus)),
        tokenizer,
        out / "data-cache",
        block_size=32,
        val_fraction=0.1,
    )
    windows = torch.stack([data.val[i]["input_ids"] for i in range(len(data.val))])
    base = hf_gpt1.GPT1ForCausalLM.from_pretrained(lora_base)
    with torch.no_grad():
        base_logits = base.eval()(input_ids=windows).logits
    peft_model = PeftModel.from_pretrained(base, out).eval()
    assert abs(_mean_window_loss(peft_model, windows) - val[60]) <= 1e-5
    with torch.no_grad():
        logits = peft_model(input_ids=windows).logits
    assert (logits - base_logits).abs().max() > 1e-3  # the adapter really changes the model
    auto = AutoPeftModelForCausalLM.from_pretrained(out).eval()  # finds the base through adapter_config.json
    with torch.no_grad():
        torch.testing.assert_close(auto(input_ids=windows).logits, logits, rtol=0, atol=1e-6)

    # --merge-adapter: a plain gpt1 model in OUTPUT_DIR/merged, same logits, LM head still tied
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert type(merged).__name__ == "GPT1ForCausalLM" and not any("lora" in n for n in merged.state_dict())
    assert merged.lm_head.weight.data_ptr() == merged.transformer.tokens_embed.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=windows).logits, logits, rtol=0, atol=1e-5)

    # --push-to-hub with LoRA publishes the merged model (its card built from the run's log, copied next to it)
    files = hub_server.files(repo)
    assert files["model.safetensors"] == (out / "merged" / "model.safetensors").read_bytes()
    assert {"config.json", "modeling_gpt1.py", "tokenizer.json", "README.md"} <= set(files)
    assert not any(name.startswith("adapter_") for name in files)
    card = files["README.md"].decode()
    assert "| perplexity |" in card and "| init_from |" in card
    assert "| peft | lora r=16 alpha=32 dropout=0.05 on attn.c_proj c_attn c_fc mlp.c_proj (merged) |" in card


def test_lora_sigkill_then_resume_equals_uninterrupted_run(tmp_path, shakespeare, lora_base):
    """The kill/resume test of full training with --peft lora: checkpoints hold the PeftModel and its optimizer, and
    LoRA dropout (0.05) on top of the base's dropout (0.1) draws from the restored RNG, so equal final adapters
    prove both are restored."""
    corpus = _excerpt(tmp_path, shakespeare)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _kill_and_resume(
        lambda out: _lora_args(corpus, lora_base, out, *KILL_RESUME_SCHEDULE), reference, interrupted, "checkpoint-6"
    )

    expected, actual = (
        load_file(reference / "adapter_model.safetensors"),
        load_file(interrupted / "adapter_model.safetensors"),
    )
    assert expected.keys() == actual.keys() and len(expected) == 16
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
    assert _train_losses(interrupted) == _train_losses(reference)
    assert _val_losses(interrupted) == _val_losses(reference)


def _parse_args(argv: list[str]):
    """pretrain.py's parse_args (hf_gpt1.pretraining_run), in this process (argument errors need no subprocess):
    the model arguments."""
    from hf_gpt1.pretraining_run import parse_args

    return parse_args(["--corpus", "c.txt", "--output-dir", "out", *argv])[0]


def test_lora_and_hub_flags(capsys, tmp_path, shakespeare, lora_base):
    args = _parse_args(["--init-from", "base", "--peft", "lora", "--lora-target-modules", "c_attn,c_fc", "mlp.c_proj"])
    assert args.lora_target_modules == ["c_attn", "c_fc", "mlp.c_proj"] and (args.lora_r, args.lora_alpha) == (8, 16)
    assert _parse_args(["--init-from", "base"]).peft == "none"
    for argv, expected in [
        (
            ["--model-config", "gpt1-tiny", "--peft", "lora"],
            "--peft lora adapts an existing model: give it with --init-from",
        ),
        (
            ["--init-from", "base", "--peft", "lora", "--push-to-hub", "me/x"],
            "publishes the merged model: add --merge-adapter",
        ),
        (["--init-from", "base", "--merge-adapter"], "--merge-adapter needs --peft lora"),
        (["--init-from", "base", "--peft", "lora", "--lora-r", "0"], "--lora-r must be a positive integer"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            _parse_args(argv)
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err

    # the earlier spellings of the options still work; an unknown option is a usage error
    from hf_gpt1.pretraining_run import parse_args

    base = ["--corpus", "c.txt", "--output-dir", "out"]
    _, data, old = parse_args(
        base
        + ["--batch-size", "4", "--num-epochs", "2", "--log-every", "5", "--eval-every", "0", "--save-every", "7"]
        + ["--cpu", "--overwrite", "--resume", "--mixed-precision", "bf16", "--push-to-hub", "me/x"]
        + ["--gradient-checkpointing", "--eval-windows", "9"]
    )
    _, _, new = parse_args(
        base
        + ["--per-device-train-batch-size", "4", "--num-train-epochs", "2", "--logging-steps", "5", "--eval-steps", "0"]
        + ["--save-steps", "7", "--use-cpu", "--overwrite-output-dir", "--resume-from-checkpoint", "--bf16"]
        + ["--push-to-hub", "--hub-model-id", "me/x", "--activation-checkpointing"]
    )
    for t in (old, new):
        assert (t.requested["per_device_train_batch_size"], t.requested["num_train_epochs"]) == (4, 2)
        assert (t.logging_steps, t.eval_steps, t.save_steps, t.use_cpu, t.overwrite_output_dir) == (5, 0, 7, 1, 1)
        assert (t.resume_from_checkpoint, t.mixed_precision, t.push_to_hub, t.hub_model_id) == (
            "auto",
            "bf16",
            1,
            "me/x",
        )
        assert t.activation_checkpointing
    assert data.eval_windows == 9
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0 and "--eval-every" in capsys.readouterr().out  # every help text formats
    _, _, defaults = parse_args(base)  # the preset fills in what the command line leaves out
    assert defaults.requested == dict.fromkeys(defaults.requested) and defaults.save_total_limit == 3
    assert (defaults.weight_decay, defaults.max_grad_norm, defaults.seed) == (0.01, 1.0, 42)
    for argv, expected in [
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--model-config", "gpt1-tiny", "--init-from", "base"], "--model-config and --init-from are exclusive"),
        (["--batch-size", "0"], "--per-device-train-batch-size must be a positive integer"),
        (["--push-to-hub", "--hub-strategy", "every_save"], "pushes the finished model only"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parse_args(base + argv)
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err

    # a target module the model does not have: a clear error before training, naming the modules it does have
    out = tmp_path / "run"
    result = run_pretrain(
        _lora_args(shakespeare, lora_base, out, "--lora-target-modules", "q_proj,v_proj"), timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error:")]
    assert "--lora-target-modules q_proj v_proj" in error and "attn.c_attn" in error and "mlp.c_fc" in error
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Publishing on the Hub (--push-to-hub), against the local Hub server of tests/hub_server.py
# ----------------------------------------------------------------------------------------------------------------------


def _card_metadata(text: str) -> dict:
    import yaml

    assert text.startswith("---\n"), text[:200]
    return yaml.safe_load(text.split("---\n")[1])


def _small_corpus(tmp_path: Path, shakespeare: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(shakespeare.read_bytes()[:8000])
    return corpus


def _push_args(corpus: Path, out: Path, tokenizer_dir: Path, *extra) -> list[str]:
    """A gpt1-tiny model (2 layers, width 64), a few updates."""
    return [
        "--corpus",
        str(corpus),
        "--model-config",
        "gpt1-tiny",
        "--output-dir",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--report-to",
        "none",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        *map(str, extra),
    ]


def test_push_to_hub_publishes_the_final_model(tmp_path, shakespeare, tokenizer_dir, hub_server):
    from transformers import AutoModelForCausalLM

    repo, out = "test-user/tiny-lm", tmp_path / "run"
    result = _ok(
        run_pretrain(
            _push_args(
                _small_corpus(tmp_path, shakespeare),
                out,
                tokenizer_dir,
                "--max-steps",
                3,
                "--save-every",
                2,
                "--eval-every",
                0,
                "--report-to",
                "tensorboard",
                "--push-to-hub",
                repo,
                "--hub-private-repo",
            ),
            env=hub_env(hub_server),
        )
    )
    assert "Uploaded " in result.stdout and f"to {repo}:" in result.stdout and "pretrain.py: pushed to" in result.stdout
    # the run left what must not be uploaded next to the model
    assert (out / "checkpoint-2" / "optimizer.pt").is_file() and list((out / "data-cache").iterdir())
    assert list((out / "runs").rglob("events.out.tfevents.*"))

    files = hub_server.files(repo)
    assert {
        "config.json",
        "model.safetensors",
        "modeling_gpt1.py",
        "configuration_gpt1.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "pretrain_run.json",
        "log.jsonl",
    } <= set(files)
    leftovers = [
        n
        for n in files
        if n.startswith(("checkpoint-", "data-cache/", "runs/", "_checkpoint-staging", ".final-"))
        or n.endswith((".bin", ".pkl", ".pt", ".npy", ".arrow"))
    ]
    assert leftovers == []
    config = json.loads(files["config.json"])
    assert config["model_type"] == "gpt1"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt1.GPT1ForCausalLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_gpt1.GPT1Config"
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = files["README.md"].decode("utf-8")
    metadata = _card_metadata(card)
    assert metadata["pipeline_tag"] == "text-generation" and "hf-gpt1" in metadata["tags"]
    assert metadata["library_name"] == "transformers" and "datasets" not in metadata  # a local file is no Hub dataset
    assert repo in card and "| max_steps | 3 |" in card
    assert [c.title for c in hub_server.commits(repo)] == [
        "GPT-1 pretrained, 3 updates",
        "initial commit",
    ]  # newest first
    assert hub_server.repo(repo).private

    # loads by name from the server (private: with the owner's token), with the local weights
    model = AutoModelForCausalLM.from_pretrained(repo)
    local = load_file(out / "model.safetensors")
    state = model.state_dict()
    for name, tensor in local.items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.parametrize("token", ["read-only", "none"])
def test_push_to_hub_without_write_access_fails_before_training(
    tmp_path, shakespeare, tokenizer_dir, hub_server, token
):
    out = tmp_path / "run"
    extra, env = [], hub_env(hub_server)
    if token == "read-only":
        extra, expected = ["--hub-token", READ_TOKEN], "the token of 'test-user' is read-only"
    else:
        env["HF_TOKEN"], expected = "", "no Hugging Face token found"  # and no stored login in the test HF_HOME
    result = run_pretrain(
        _push_args(
            _small_corpus(tmp_path, shakespeare),
            out,
            tokenizer_dir,
            "--max-steps",
            3,
            "--push-to-hub",
            "test-user/tiny-lm",
            *extra,
        ),
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert errors[0].startswith("pretrain.py: error: --push-to-hub test-user/tiny-lm: Cannot push to test-user/tiny-lm")
    assert expected in errors[0] and "nothing was run" in errors[0]
    assert not out.exists()  # failed before the output folder, the corpus or the model were touched
    assert [r for r in hub_server.requests if r.method == "POST"] == []


def test_failed_push_after_training_keeps_the_model_and_exits_1(tmp_path, shakespeare, tokenizer_dir, hub_server):
    """The token passes the startup check, then loses write access while the model trains: the upload fails, the run
    says so and how to retry, and the saved model is left complete."""
    out = tmp_path / "run"
    args = _push_args(
        _small_corpus(tmp_path, shakespeare),
        out,
        tokenizer_dir,
        "--max-steps",
        6,
        "--eval-every",
        0,
        "--push-to-hub",
        "test-user/tiny-lm",
    )
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env={**_env(), **hub_env(hub_server)},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: (out / "pretrain_run.json").is_file(), process, 300, "the run to start")  # after the check
    hub_server.tokens[hub_server.token] = HubUser(USER, can_write=False)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert "pretrain.py: trained 6 updates" in stdout, stderr[-3000:]
    assert "pretrain.py: error: pushing to the Hub failed:" in stderr and "permission denied" in stderr
    assert f"python scripts/push_to_hub.py {out} test-user/tiny-lm" in stderr
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "gpt1"
    assert not (out / "README.md").exists()  # push_folder removes the card it wrote for the failed upload


def test_gpt1_mini_preset_trains_its_bpe_on_the_corpus(tmp_path, shakespeare):
    """Without --tokenizer, gpt1-mini learns its 8,192-token BPE from --corpus (no download), sizes the model's table
    to it, saves it with the model, and a resumed run learns exactly the same vocabulary."""
    from hf_gpt1 import GPT1Config, load_gpt1_tokenizer
    from hf_gpt1.pretraining import PRESETS

    out = tmp_path / "mini"
    args = [
        *("--corpus", str(shakespeare), "--model-config", "gpt1-mini", "--output-dir", str(out)),
        *("--report-to", "none", "--block-size", "32", "--per-device-train-batch-size", "2", "--bf16"),
        *("--save-steps", "2", "--warmup-steps", "1", "--eval-windows", "4"),
    ]
    first = _ok(run_pretrain([*args, "--max-steps", "2"]))
    assert "BPE learned on the corpus" in first.stderr
    cached = sorted((out / "data-cache").glob("bpe-8192-*"))
    assert len(cached) == 1
    learned = load_gpt1_tokenizer(cached[0]).get_vocab()
    # resumed (a longer run): the cached vocabulary, not a new one (the run identity would refuse a different one)
    _ok(run_pretrain([*args, "--max-steps", "4", "--resume-from-checkpoint", "auto"]))
    saved = load_gpt1_tokenizer(out)
    assert saved.get_vocab() == learned
    assert 4000 < saved.vocab_size <= PRESETS["gpt1-mini"].bpe_vocab_size == 8192  # merges, not just characters
    assert GPT1Config.from_pretrained(out).vocab_size == len(saved) == saved.vocab_size + 4
    words = saved.tokenize("To be, or not to be: that is the question.")
    assert "<unk>" not in words and len(words) <= 14
