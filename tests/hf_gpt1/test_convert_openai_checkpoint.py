"""Conversion of the original OpenAI GPT-1 release, proven on random weights written in exactly the release layout.

The real `params_*.npy` are not available offline, so the tests write shards the way the release stores them (one
flat float32 vector over the arrays of `params_shapes.json`, cut into 10 near-equal `.npy` files), convert, and
check the converted model's logits against

  * a NumPy port of the original TensorFlow forward pass (`train.py`: embeddings summed from one `we` table,
    post-LN blocks, tanh-GELU, scaled causal attention, LM logits = h · weᵀ), reading the shards with the
    original loading code, and
  * transformers' own `OpenAIGPTLMHeadModel` holding the same arrays in its Conv1D layout.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, OpenAIGPTConfig, OpenAIGPTLMHeadModel

import hf_gpt1  # noqa: F401  (registers model_type "gpt1" with the Auto classes)
from hf_gpt1.convert_openai_checkpoint import (
    ConversionReport,
    convert_hf_openai_checkpoint,
    convert_openai_checkpoint,
    expected_shapes,
)
from hf_gpt1.modeling_gpt1 import GPT1ForCausalLM
from testing_utils import assert_modes_follow_umask

REPO_ROOT = Path(__file__).resolve().parents[2]
BPE_SIZE = 40478
N_SPECIAL = 3  # _start_, _delimiter_, _classify_: the rows train.py inserts between tokens and positions
TINY = dict(n_positions=24, n_embd=32, n_layer=2, n_head=4)


# ----------------------------------------------------------------------------------------------------------------------
# Writing a release: the layout of openai/finetune-transformer-lm/model
# ----------------------------------------------------------------------------------------------------------------------


def release_shapes(n_positions: int, vocab: int, n_embd: int, n_layer: int) -> list[list[int]]:
    """params_shapes.json for a GPT-1 of this size, written out independently of the converter."""
    e = n_embd
    block = [[1, e, 3 * e], [3 * e], [1, e, e], [e], [e], [e], [1, e, 4 * e], [4 * e], [1, 4 * e, e], [e], [e], [e]]
    return [[n_positions, e], [vocab, e]] + block * n_layer


def write_release(folder: Path, shapes: list[list[int]], tokenizer_dir: Path, seed: int = 0) -> None:
    """Random weights with realistic scales, flattened and cut into params_0..9.npy as in the release."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [math.prod(shape) for shape in shapes]
    flat = np.empty(sum(sizes), dtype=np.float32)
    start = 0
    for shape, size in zip(shapes, sizes):
        part = flat[start : start + size]
        rng.standard_normal(size, dtype=np.float32, out=part)
        # conv weights [1, in, out]: unit-variance outputs, so attention is far from uniform; the rest: 0.1 scale
        part *= 1.0 / math.sqrt(shape[1]) if len(shape) == 3 else 0.1
        start += size
    offsets = np.cumsum([0] + sizes)
    for layer in range((len(shapes) - 2) // 12):
        for gain in (4, 10):  # ln_1/g and ln_2/g (within each block of 12) become 1 + 0.1·N(0, 1)
            index = 2 + 12 * layer + gain
            flat[offsets[index] : offsets[index + 1]] += 1.0
    for index, shard in enumerate(np.array_split(flat, 10)):
        np.save(folder / f"params_{index}.npy", shard)
    (folder / "params_shapes.json").write_text(json.dumps(shapes))
    for name in ("encoder_bpe_40000.json", "vocab_40000.bpe"):
        shutil.copyfile(tokenizer_dir / name, folder / name)


def train_py_load(folder: Path) -> list[np.ndarray]:
    """The original train.py loader, verbatim apart from allow_pickle=False and the folder."""
    shapes = json.load(open(folder / "params_shapes.json"))
    offsets = np.cumsum([np.prod(shape) for shape in shapes])
    init_params = [np.load(folder / f"params_{n}.npy", allow_pickle=False) for n in range(10)]
    init_params = np.split(np.concatenate(init_params, 0), offsets)[:-1]
    return [param.reshape(shape) for param, shape in zip(init_params, shapes)]


# ----------------------------------------------------------------------------------------------------------------------
# The original TensorFlow forward pass, in NumPy
# ----------------------------------------------------------------------------------------------------------------------


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * np.power(x, 3))))


def _norm(x, g, b, e=1e-5):
    u = x.mean(-1, keepdims=True)
    s = np.square(x - u).mean(-1, keepdims=True)
    return (x - u) / np.sqrt(s + e) * g + b


def _conv1d(x, w, b):  # rf == 1: reshape(x, [-1, nx]) @ reshape(w, [-1, nf]) + b
    return x @ w.reshape(-1, w.shape[-1]) + b


def _attn(x, w_attn, b_attn, w_proj, b_proj, n_head):
    t, n_state = x.shape
    q, k, v = np.split(_conv1d(x, w_attn, b_attn), 3, axis=-1)
    heads = lambda a: a.reshape(t, n_head, n_state // n_head).transpose(1, 0, 2)  # noqa: E731  [h, t, d]
    q, k, v = heads(q), heads(k), heads(v)
    w = q @ k.transpose(0, 2, 1) * (1.0 / np.sqrt(np.float32(v.shape[-1])))
    mask = np.tril(np.ones((t, t), dtype=x.dtype))
    w = w * mask + -1e9 * (1 - mask)
    w = np.exp(w - w.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    a = (w @ v).transpose(1, 0, 2).reshape(t, n_state)  # merge_heads
    return _conv1d(a, w_proj, b_proj)


def original_lm_logits(params: list[np.ndarray], special_rows: np.ndarray, token_ids: list[int], n_head: int):
    """Logits over the n_vocab + n_special token rows of `we`, for one sequence, as the TF model computes them."""
    positions, tokens = params[0], params[1]
    n_vocab = tokens.shape[0]
    we = np.concatenate([tokens, special_rows, positions], 0)  # train.py: [params_1; special rows; params_0]
    X = np.stack([np.array(token_ids), n_vocab + len(special_rows) + np.arange(len(token_ids))], -1)
    h = we[X].sum(1)  # embed(): gather token and position rows, reduce_sum
    n_layer = (len(params) - 2) // 12
    for layer in range(n_layer):
        p = params[2 + 12 * layer : 2 + 12 * (layer + 1)]
        a = _attn(h, p[0], p[1], p[2], p[3], n_head)
        n = _norm(h + a, p[4], p[5])
        m = _conv1d(_gelu(_conv1d(n, p[6], p[7])), p[8], p[9])
        h = _norm(n + m, p[10], p[11])
    return h @ we[: n_vocab + len(special_rows)].T


def conv1d_state(params: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The release arrays under transformers' openai-gpt names (Conv1D keeps [in, out]: squeeze, no transpose)."""
    names = ["attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_1.weight",
             "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight",
             "ln_2.bias"]  # fmt: skip
    state = {"transformer.positions_embed.weight": torch.from_numpy(params[0])}
    for layer in range((len(params) - 2) // 12):
        for name, array in zip(names, params[2 + 12 * layer : 2 + 12 * (layer + 1)]):
            array = array[0] if array.ndim == 3 else array  # Conv1D keeps [in, out]: squeeze only
            state[f"transformer.h.{layer}.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def transformers_openai_logits(params, token_rows: np.ndarray, token_ids: list[int], n_head: int) -> np.ndarray:
    """Logits of transformers' OpenAIGPTLMHeadModel holding the same arrays, `token_rows` as its token table."""
    n_positions, n_embd = params[0].shape
    config = OpenAIGPTConfig(
        vocab_size=token_rows.shape[0], n_positions=n_positions, n_embd=n_embd, n_layer=(len(params) - 2) // 12,
        n_head=n_head, afn="gelu",  # transformers' openai-gpt "gelu" is the tanh approximation (gelu_new)
    )  # fmt: skip
    model = OpenAIGPTLMHeadModel(config).eval()
    tokens = {"transformer.tokens_embed.weight": torch.from_numpy(np.ascontiguousarray(token_rows))}
    missing, unexpected = model.load_state_dict({**tokens, **conv1d_state(params)}, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0].numpy()
    del model
    return logits


def our_logits(folder: Path, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the converted checkpoint, loaded the way users load it; also returns its added-token rows."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model) is GPT1ForCausalLM
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0].numpy()
    special_rows = model.get_input_embeddings().weight[BPE_SIZE:].detach().numpy().copy()
    del model
    return logits, special_rows


def check_against_references(release: Path, converted: Path, text: str, n_head: int) -> None:
    tokenizer = AutoTokenizer.from_pretrained(converted)
    token_ids = tokenizer(text, "a short second text .")["input_ids"]  # _start_ a _delimiter_ b _classify_
    assert token_ids[0] == BPE_SIZE and token_ids[-1] == BPE_SIZE + 2 and BPE_SIZE + 1 in token_ids

    logits, added_rows = our_logits(converted, token_ids)
    assert logits.shape == (len(token_ids), BPE_SIZE + 4)
    params = train_py_load(release)
    special_rows = added_rows[:N_SPECIAL]  # start, delimiter, extract; the pad row is never an input here
    reference = original_lm_logits(params, special_rows, token_ids, n_head)
    assert np.abs(logits[:, : BPE_SIZE + N_SPECIAL] - reference).max() <= 1e-4
    assert reference.std() > 0.3  # the comparison is not between two near-zero arrays

    token_rows = np.concatenate([params[1], added_rows], 0)
    hf_logits = transformers_openai_logits(params, token_rows, token_ids, n_head)
    assert np.abs(logits - hf_logits).max() <= 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory, tokenizer_dir) -> Path:
    """A release repo checkout: weights and BPE files under model/."""
    root = tmp_path_factory.mktemp("finetune-transformer-lm")
    shapes = release_shapes(TINY["n_positions"], BPE_SIZE, TINY["n_embd"], TINY["n_layer"])
    write_release(root / "model", shapes, tokenizer_dir)
    return root


@pytest.fixture(scope="module")
def tiny_converted(tiny_release, tmp_path_factory) -> tuple[Path, ConversionReport]:
    dst = tmp_path_factory.mktemp("out") / "gpt1-tiny"
    report = convert_openai_checkpoint(tiny_release, dst, n_head=TINY["n_head"])
    return dst, report


@pytest.fixture
def broken_release(tiny_release, tmp_path) -> Path:
    """A private copy of the tiny release's model/ folder, to damage."""
    return Path(shutil.copytree(tiny_release / "model", tmp_path / "release"))


def _assert_nothing_written(dst: Path) -> None:
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]  # no temp leftovers


# ----------------------------------------------------------------------------------------------------------------------
# shapes: our understanding of the release layout matches the real params_shapes.json
# ----------------------------------------------------------------------------------------------------------------------


def test_real_params_shapes_match_the_documented_layout(tokenizer_dir):
    real = json.loads((tokenizer_dir / "params_shapes.json").read_text())
    assert len(real) == 146
    assert real == release_shapes(512, BPE_SIZE, 768, 12)
    assert [list(s) for s in expected_shapes(512, BPE_SIZE, 768, 12)] == real
    assert sum(math.prod(s) for s in real) == 116_534_784


# ----------------------------------------------------------------------------------------------------------------------
# tiny release: numerics, layout, outputs
# ----------------------------------------------------------------------------------------------------------------------


def test_tiny_conversion_matches_original_forward_and_transformers(tiny_release, tiny_converted, sst2_first_sentence):
    dst, _ = tiny_converted
    check_against_references(tiny_release / "model", dst, sst2_first_sentence, n_head=TINY["n_head"])


def test_weights_are_transposed_into_linear_layout(tiny_release, tiny_converted):
    dst, _ = tiny_converted
    params = train_py_load(tiny_release / "model")
    model = GPT1ForCausalLM.from_pretrained(dst)
    block = model.transformer.h[1]
    e = TINY["n_embd"]
    assert torch.equal(block.attn.c_attn.weight, torch.from_numpy(params[2 + 12][0].T.copy()))  # [3E, E]
    assert block.attn.c_attn.weight.shape == (3 * e, e)
    # rows 0..E-1 are the query projection: the first E output columns of the original c_attn/w
    assert torch.equal(block.attn.c_attn.weight[:e], torch.from_numpy(params[2 + 12][0][:, :e].T.copy()))
    assert torch.equal(block.mlp.c_fc.weight, torch.from_numpy(params[2 + 12 + 6][0].T.copy()))  # [4E, E]
    assert torch.equal(block.mlp.c_proj.weight, torch.from_numpy(params[2 + 12 + 8][0].T.copy()))  # [E, 4E]
    assert torch.equal(block.ln_2.weight, torch.from_numpy(params[2 + 12 + 10]))
    assert torch.equal(model.transformer.positions_embed.weight, torch.from_numpy(params[0]))
    assert torch.equal(model.transformer.tokens_embed.weight[:BPE_SIZE], torch.from_numpy(params[1]))
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()


def test_outputs_config_tokenizer_and_report(tiny_converted):
    dst, report = tiny_converted
    assert sorted(p.name for p in dst.iterdir() if p.is_file()) == sorted(report.files)
    assert_modes_follow_umask(dst)  # not mkdtemp's 0700 folder, not safetensors' 0600 weights
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert name in report.files
    with safe_open(dst / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
        assert "lm_head.weight" not in keys  # tied, stored once
        assert weights.get_slice("transformer.tokens_embed.weight").get_shape() == [BPE_SIZE + 4, TINY["n_embd"]]
        assert all(weights.get_slice(k).get_dtype() == "F32" for k in keys)
    assert len(keys) == 2 + 12 * TINY["n_layer"]

    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "gpt1"
    assert {k: config[k] for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")} == {
        **{k: v for k, v in TINY.items()},
        "vocab_size": BPE_SIZE + 4,
    }
    assert (config["start_token_id"], config["delimiter_token_id"], config["extract_token_id"]) == (40478, 40479, 40480)
    assert config["pad_token_id"] == 40481 and config["bos_token_id"] == 40478

    tokenizer = AutoTokenizer.from_pretrained(dst)
    assert len(tokenizer) == BPE_SIZE + 4 and tokenizer.cls_token_id == 40480
    assert tokenizer("hello")["input_ids"] == [40478, 3570, 40480]

    shapes = release_shapes(TINY["n_positions"], BPE_SIZE, TINY["n_embd"], TINY["n_layer"])
    num_values = sum(math.prod(s) for s in shapes)
    assert report.arrays == 2 + 12 * TINY["n_layer"]
    assert report.parameters_read == num_values
    assert report.model_parameters == num_values + 4 * TINY["n_embd"]
    assert report.special_tokens == {"_start_": 40478, "_delimiter_": 40479, "_classify_": 40480, "<pad>": 40481}
    assert report.shards == [f"params_{i}.npy" for i in range(10)]
    text = report.summary()
    assert str(dst) in text and "26 arrays" in text and f"{num_values:,}" in text and "model.safetensors" in text


def test_special_rows_are_small_random_and_reproducible(tiny_release, tiny_converted, tmp_path):
    dst, _ = tiny_converted
    again = tmp_path / "again"
    convert_openai_checkpoint(tiny_release, again, n_head=TINY["n_head"])
    rows_a = GPT1ForCausalLM.from_pretrained(dst).get_input_embeddings().weight[BPE_SIZE:]
    rows_b = GPT1ForCausalLM.from_pretrained(again).get_input_embeddings().weight[BPE_SIZE:]
    assert torch.equal(rows_a, rows_b)  # fixed seed: conversions are reproducible
    assert 0.005 < rows_a.std().item() < 0.04  # N(0, 0.02), not a copy of the 0.1-scale trained rows


def test_without_special_tokens_it_is_the_plain_release(tiny_release, tmp_path):
    dst = tmp_path / "plain"
    report = convert_openai_checkpoint(tiny_release / "model", dst, n_head=TINY["n_head"], add_special_tokens=False)
    assert report.special_tokens == {}
    model = GPT1ForCausalLM.from_pretrained(dst)
    assert model.config.vocab_size == BPE_SIZE and model.config.extract_token_id is None
    tokenizer = AutoTokenizer.from_pretrained(dst)
    assert len(tokenizer) == BPE_SIZE and tokenizer.cls_token is None
    assert tokenizer("hello")["input_ids"] == [3570]


# ----------------------------------------------------------------------------------------------------------------------
# bad inputs: a clear error naming the file, and no destination left behind
# ----------------------------------------------------------------------------------------------------------------------


def _convert_expecting(error: type[Exception], src: Path, dst: Path, *patterns: str, **kwargs) -> str:
    with pytest.raises(error) as info:
        convert_openai_checkpoint(src, dst, n_head=kwargs.pop("n_head", TINY["n_head"]), **kwargs)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, message
    _assert_nothing_written(dst)
    return message


def test_missing_shard(broken_release, tmp_path):
    (broken_release / "params_7.npy").unlink()
    _convert_expecting(FileNotFoundError, broken_release, tmp_path / "dst", "params_7.npy", str(broken_release))


def test_wrong_size_shard(broken_release, tmp_path):
    shard = np.load(broken_release / "params_5.npy")
    np.save(broken_release / "params_5.npy", shard[:-3])
    message = _convert_expecting(ValueError, broken_release, tmp_path / "dst", "params_5.npy", "params_shapes.json")
    assert f"holds {shard.size - 3} values where an even split puts {shard.size}" in message


def test_float64_shard(broken_release, tmp_path):
    np.save(broken_release / "params_2.npy", np.load(broken_release / "params_2.npy").astype(np.float64))
    _convert_expecting(ValueError, broken_release, tmp_path / "dst", "params_2.npy", "float64", "float32")


def test_pickled_shard_is_refused(broken_release, tmp_path):
    np.save(broken_release / "params_0.npy", np.array([{"not": "weights"}], dtype=object), allow_pickle=True)
    _convert_expecting(ValueError, broken_release, tmp_path / "dst", "params_0.npy")


@pytest.mark.parametrize(
    "damage, patterns",
    [
        (lambda s: s[:-1], ["params_shapes.json", "25 arrays", "2 + 12"]),
        (lambda s: s[:14] + [[1, 32, 95]] + s[15:], ["params_shapes.json", "array 14", "model/h1/attn/c_attn/w",
                                                     "[1, 32, 95]", "[1, 32, 96]"]),
        (lambda s: [[24, 32], [BPE_SIZE, 48]] + s[2:], ["params_shapes.json", "array 1", f"[{BPE_SIZE}, 32]"]),
    ],
    ids=["array-missing", "wrong-block-shape", "wrong-width"],
)  # fmt: skip
def test_mismatched_shapes_file(broken_release, tmp_path, damage, patterns):
    shapes_file = broken_release / "params_shapes.json"
    shapes_file.write_text(json.dumps(damage(json.loads(shapes_file.read_text()))))
    _convert_expecting(ValueError, broken_release, tmp_path / "dst", *patterns)


def test_shapes_that_do_not_add_up_to_the_shards(broken_release, tmp_path):
    shapes_file = broken_release / "params_shapes.json"
    shapes = json.loads(shapes_file.read_text())
    shapes[0] = [12, 32]  # a valid GPT-1 layout, but not the one these shards hold
    shapes_file.write_text(json.dumps(shapes))
    _convert_expecting(ValueError, broken_release, tmp_path / "dst", "params_shapes.json", "float32 values")


def test_bad_head_count(broken_release, tmp_path):
    _convert_expecting(ValueError, broken_release, tmp_path / "dst", "n_head=5", "n_embd=32", n_head=5)


def test_missing_tokenizer_files(broken_release, tmp_path):
    (broken_release / "vocab_40000.bpe").unlink()
    _convert_expecting(FileNotFoundError, broken_release, tmp_path / "dst", "vocab_40000.bpe", str(broken_release))


def test_not_a_release_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _convert_expecting(FileNotFoundError, tmp_path / "empty", tmp_path / "dst", "params_shapes.json", "model")


def test_existing_destination_is_left_alone(tiny_release, tmp_path):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="taken"):
        convert_openai_checkpoint(tiny_release, dst, n_head=TINY["n_head"])
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]


def test_failure_while_writing_leaves_nothing(tiny_release, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(GPT1ForCausalLM, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_openai_checkpoint(tiny_release, tmp_path / "dst", n_head=TINY["n_head"])
    _assert_nothing_written(tmp_path / "dst")


# ----------------------------------------------------------------------------------------------------------------------
# CLI and --from-hf
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess (the project's marker for those): ~10-25 s of imports
def test_cli_converts_and_reports(tiny_release, tmp_path):
    dst = tmp_path / "cli-out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert_openai_checkpoint.py"),
         "--src", str(tiny_release), "--dst", str(dst), "--n-head", str(TINY["n_head"])],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"-> {dst}" in result.stdout and "26 arrays" in result.stdout and "_classify_=40480" in result.stdout
    assert (dst / "model.safetensors").is_file()


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert _load_cli().main(["--src", str(tmp_path / "nowhere"), "--dst", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err
    _assert_nothing_written(tmp_path / "x")


def test_from_hf_converts_an_openai_gpt_checkpoint(tiny_release, tiny_converted, tokenizer_dir, tmp_path,
                                                   sst2_first_sentence):  # fmt: skip
    """transformers openai-gpt folder -> native gpt1 folder, with identical logits on the shared vocabulary."""
    params = train_py_load(tiny_release / "model")
    hf_dir = tmp_path / "openai-gpt"
    config = OpenAIGPTConfig(vocab_size=BPE_SIZE, n_positions=TINY["n_positions"], n_embd=TINY["n_embd"],
                             n_layer=TINY["n_layer"], n_head=TINY["n_head"])  # fmt: skip
    reference = OpenAIGPTLMHeadModel(config).eval()
    reference.load_state_dict(
        {"transformer.tokens_embed.weight": torch.from_numpy(params[1]), **conv1d_state(params)}, strict=False
    )
    reference.save_pretrained(hf_dir)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / name, hf_dir / name)

    dst = tmp_path / "gpt1-from-hf"
    assert _load_cli().main(["--from-hf", "--src", str(hf_dir), "--dst", str(dst)]) == 0  # the CLI, in-process
    model = AutoModelForCausalLM.from_pretrained(dst).eval()
    assert type(model) is GPT1ForCausalLM and model.config.extract_token_id == 40480
    tokenizer = AutoTokenizer.from_pretrained(dst)
    ids = tokenizer(sst2_first_sentence, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0, :, :BPE_SIZE]
        theirs = reference(torch.tensor([ids])).logits[0]
    assert (ours - theirs).abs().max().item() <= 1e-4

    # exactly the weights of the direct conversion of the release; even the special rows, which both paths
    # draw from N(0, 0.02) with the converter's fixed seed
    direct = GPT1ForCausalLM.from_pretrained(tiny_converted[0]).state_dict()
    assert direct.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, direct[name]), name


def test_from_hf_rejects_other_models(tmp_path):
    src = tmp_path / "gpt2"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="gpt2"):
        convert_hf_openai_checkpoint(src, tmp_path / "dst")
    _assert_nothing_written(tmp_path / "dst")


def _load_cli():
    spec = importlib.util.spec_from_file_location("convert_cli", REPO_ROOT / "scripts" / "convert_openai_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------------------
# full GPT-1 size, from the real params_shapes.json
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_release_conversion(tokenizer_dir, tmp_path, sst2_first_sentence):
    """116.5M random float32 values (466 MB of shards) in the real 146-array layout, converted and checked."""
    shapes = json.loads((tokenizer_dir / "params_shapes.json").read_text())
    release = tmp_path / "finetune-transformer-lm" / "model"
    dst = tmp_path / "gpt1"
    try:
        write_release(release, shapes, tokenizer_dir, seed=1)
        report = convert_openai_checkpoint(release.parent, dst)  # n_head defaults to GPT-1's 12
        assert report.arrays == 146 and report.parameters_read == 116_534_784
        assert report.config == {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 512, "vocab_size": 40482}
        assert (dst / "model.safetensors").stat().st_size > 4 * 116_534_784
        check_against_references(release, dst, sst2_first_sentence, n_head=12)
    finally:  # ~1 GB of shards and safetensors: don't leave it in pytest's kept tmp dirs
        shutil.rmtree(release.parent, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_first_sentence(glue_dir) -> str:
    """A real sentence for the inputs (SST-2 dev, row 1)."""
    return (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1].split("\t")[0]
