"""Convert the original OpenAI GPT-1 release into a native `gpt1` checkpoint (safetensors + tokenizer).

The release (`openai/finetune-transformer-lm`, folder `model/`) stores the weights as ONE flat float32 vector
cut into ten shards `params_0.npy … params_9.npy`, plus `params_shapes.json` listing the arrays in order.
The original `train.py` reads it back as

    offsets = np.cumsum([np.prod(shape) for shape in shapes])
    init_params = np.split(np.concatenate([np.load(f'model/params_{n}.npy') for n in range(10)], 0), offsets)[:-1]
    init_params = [param.reshape(shape) for param, shape in zip(init_params, shapes)]

and this module does the same (with `allow_pickle=False`). The arrays are, in order:

    0  positions  [n_ctx, n_embd]        1  tokens  [n_vocab, n_embd]
    then per block h{i}, 12 arrays:  attn/c_attn/w [1,E,3E] (columns q|k|v), attn/c_attn/b [3E],
        attn/c_proj/w [1,E,E], attn/c_proj/b [E], ln_1/g [E], ln_1/b [E], mlp/c_fc/w [1,E,4E], mlp/c_fc/b [4E],
        mlp/c_proj/w [1,4E,E], mlp/c_proj/b [E], ln_2/g [E], ln_2/b [E]

The `w` arrays are 1x1 convolutions, [1, in, out]; our projections are `nn.Linear` ([out, in]), so each is
squeezed and transposed. LayerNorm g/b become weight/bias. The LM head is tied to the token table.

Everything is validated before anything is written, and the checkpoint is assembled in a temporary sibling
folder that is renamed into place at the end, so a failed conversion leaves no partial destination behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .configuration_gpt1 import GPT1Config
from .file_modes import reset_modes_to_umask
from .modeling_gpt1 import GPT1ForCausalLM
from .tokenization_gpt1 import (
    _find_tokenizer_files,
    _is_local_path,
    _load_bpe_tokenizer,
    gpt1_special_token_ids,
    load_gpt1_tokenizer,
)
from .tokenization_gpt1 import (
    add_special_tokens as add_gpt1_special_tokens,
)

SHAPES_FILE = "params_shapes.json"
NUM_SHARDS = 10  # the release (and train.py) always use params_0..params_9
ARRAYS_PER_BLOCK = 12
SPECIAL_ROWS_SEED = 0  # new special-token rows are random; a fixed seed makes conversions reproducible

# Per block: (original variable, our parameter name, is a [1, in, out] conv weight, shape(E) in the release).
_BLOCK_ARRAYS: list[tuple[str, str, bool, Callable[[int], tuple[int, ...]]]] = [
    ("attn/c_attn/w", "attn.c_attn.weight", True, lambda e: (1, e, 3 * e)),
    ("attn/c_attn/b", "attn.c_attn.bias", False, lambda e: (3 * e,)),
    ("attn/c_proj/w", "attn.c_proj.weight", True, lambda e: (1, e, e)),
    ("attn/c_proj/b", "attn.c_proj.bias", False, lambda e: (e,)),
    ("ln_1/g", "ln_1.weight", False, lambda e: (e,)),
    ("ln_1/b", "ln_1.bias", False, lambda e: (e,)),
    ("mlp/c_fc/w", "mlp.c_fc.weight", True, lambda e: (1, e, 4 * e)),
    ("mlp/c_fc/b", "mlp.c_fc.bias", False, lambda e: (4 * e,)),
    ("mlp/c_proj/w", "mlp.c_proj.weight", True, lambda e: (1, 4 * e, e)),
    ("mlp/c_proj/b", "mlp.c_proj.bias", False, lambda e: (e,)),
    ("ln_2/g", "ln_2.weight", False, lambda e: (e,)),
    ("ln_2/b", "ln_2.bias", False, lambda e: (e,)),
]


# ----------------------------------------------------------------------------------------------------------------------
# Reading and validating the release
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseLayout:
    """What `params_shapes.json` says, plus where the files are. Built only from validated inputs."""

    directory: Path
    shapes: list[tuple[int, ...]]
    shard_files: list[Path]
    n_positions: int
    vocab_size: int
    n_embd: int
    n_layer: int

    @property
    def num_values(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


def find_release_dir(src_dir: str | os.PathLike) -> Path:
    """The folder holding `params_shapes.json`: `src_dir` itself or its `model/` subfolder (the release repo)."""
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"Release folder {src} does not exist (or is not a folder).")
    for directory in (src, src / "model"):
        if (directory / SHAPES_FILE).is_file():
            return directory
    raise FileNotFoundError(
        f"No {SHAPES_FILE} in {src} nor in {src / 'model'}. Expected the original GPT-1 release layout: "
        f"{SHAPES_FILE}, params_0.npy … params_{NUM_SHARDS - 1}.npy, encoder_bpe_40000.json, vocab_40000.bpe."
    )


def original_array_names(n_layer: int) -> list[str]:
    """Names of the release arrays in file order (the TF variable each one was), for error messages and reports."""
    names = ["model/we (positions)", "model/we (tokens)"]
    for layer in range(n_layer):
        names += [f"model/h{layer}/{original}" for original, _, _, _ in _BLOCK_ARRAYS]
    return names


def expected_shapes(n_positions: int, vocab_size: int, n_embd: int, n_layer: int) -> list[tuple[int, ...]]:
    """The release's array shapes for a GPT-1 of the given size (2 + 12·n_layer arrays)."""
    shapes = [(n_positions, n_embd), (vocab_size, n_embd)]
    for _ in range(n_layer):
        shapes += [shape_of(n_embd) for _, _, _, shape_of in _BLOCK_ARRAYS]
    return shapes


def read_shapes(shapes_file: Path) -> list[tuple[int, ...]]:
    """Parse `params_shapes.json`: a JSON list of shapes, each a list of positive integers."""
    try:
        raw = json.loads(shapes_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{shapes_file} is not valid JSON ({error}).") from error
    if not isinstance(raw, list):
        raise ValueError(f"{shapes_file} must be a JSON list of array shapes, got {type(raw).__name__}.")
    shapes = []
    for index, shape in enumerate(raw):
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
            raise ValueError(f"{shapes_file}: entry {index} is {shape!r}; every shape must be a list of positive ints.")
        shapes.append(tuple(shape))
    return shapes


def validate_shapes(shapes: list[tuple[int, ...]], shapes_file: Path) -> tuple[int, int, int, int]:
    """Check the shapes describe a GPT-1 (2 + 12·n_layer arrays, consistent widths). Returns (P, V, E, n_layer)."""
    if len(shapes) < 2 + ARRAYS_PER_BLOCK or (len(shapes) - 2) % ARRAYS_PER_BLOCK:
        raise ValueError(
            f"{shapes_file} lists {len(shapes)} arrays; a GPT-1 release has 2 + {ARRAYS_PER_BLOCK}·n_layer "
            f"(positions, tokens, then {ARRAYS_PER_BLOCK} per block; 146 for the 12-layer release)."
        )
    for index, label in ((0, "positions [n_ctx, n_embd]"), (1, "tokens [n_vocab, n_embd]")):
        if len(shapes[index]) != 2:
            raise ValueError(
                f"{shapes_file}: array {index} should be the {label} table, got shape {list(shapes[index])}."
            )
    (n_positions, n_embd), (vocab_size, _) = shapes[0], shapes[1]
    n_layer = (len(shapes) - 2) // ARRAYS_PER_BLOCK
    expected = expected_shapes(n_positions, vocab_size, n_embd, n_layer)
    names = original_array_names(n_layer)
    for index, (got, want) in enumerate(zip(shapes, expected)):
        if got != want:
            raise ValueError(
                f"{shapes_file}: array {index} ({names[index]}) has shape {list(got)}, expected {list(want)} "
                f"for n_embd={n_embd} (read from array 0, the [{n_positions}, {n_embd}] position table)."
            )
    return n_positions, vocab_size, n_embd, n_layer


def _open_shard(path: Path) -> np.ndarray:
    """Memory-map one shard (header parsed, data not read yet) and check it is a 1-D float32 array."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Missing shard {path.name} in {path.parent}: the release has params_0.npy … params_{NUM_SHARDS - 1}.npy."
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable float32 .npy array ({error}).") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path} is an .npz archive; expected a single float32 .npy array.")
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise ValueError(f"{path} holds {array.dtype} values; the release shards are float32 (expected dtype float32).")
    if array.ndim != 1:
        raise ValueError(f"{path} has shape {list(array.shape)}; the release shards are 1-D slices of one flat vector.")
    return array


def _check_total_size(
    shards: list[np.ndarray], files: list[Path], shapes: list[tuple[int, ...]], shapes_file: Path
) -> None:
    num_values = sum(math.prod(shape) for shape in shapes)
    sizes = [int(shard.size) for shard in shards]
    if sum(sizes) == num_values:
        return
    # The release cut its vector into near-equal parts (np.array_split); if exactly one shard deviates from that
    # split, it is almost certainly the damaged one, so name it.
    quotient, remainder = divmod(num_values, len(files))
    expected_sizes = [quotient + 1] * remainder + [quotient] * (len(files) - remainder)  # np.array_split's sizes
    odd = [i for i, (got, want) in enumerate(zip(sizes, expected_sizes)) if got != want]
    culprit = ""
    if len(odd) == 1:
        i = odd[0]
        culprit = f" {files[i].name} holds {sizes[i]} values where an even split puts {expected_sizes[i]}."
    listing = ", ".join(f"{f.name}: {n}" for f, n in zip(files, sizes))
    raise ValueError(
        f"The shards in {files[0].parent} hold {sum(sizes)} float32 values in total, but the {len(shapes)} "
        f"shapes in {shapes_file.name} need {num_values}.{culprit} ({listing})"
    )


def inspect_release(src_dir: str | os.PathLike) -> ReleaseLayout:
    """Validate a release folder without reading the weights: shapes file, every shard's header, total size."""
    directory = find_release_dir(src_dir)
    shapes_file = directory / SHAPES_FILE
    shapes = read_shapes(shapes_file)
    n_positions, vocab_size, n_embd, n_layer = validate_shapes(shapes, shapes_file)
    files = [directory / f"params_{index}.npy" for index in range(NUM_SHARDS)]
    shards = [_open_shard(path) for path in files]
    layout = ReleaseLayout(directory, shapes, files, n_positions, vocab_size, n_embd, n_layer)
    _check_total_size(shards, files, shapes, shapes_file)
    return layout


def load_release_arrays(layout: ReleaseLayout) -> list[np.ndarray]:
    """The release's arrays, exactly as `train.py` rebuilds them: concatenate the shards, split, reshape.

    The flat vector is one native float32 buffer; the returned arrays are views into it.
    """
    flat = np.empty(layout.num_values, dtype=np.float32)
    position = 0
    for path in layout.shard_files:
        shard = np.load(path, mmap_mode="r", allow_pickle=False)
        flat[position : position + shard.size] = shard
        position += shard.size
    offsets = np.cumsum([math.prod(shape) for shape in layout.shapes])
    parts = np.split(flat, offsets)[:-1]
    return [part.reshape(shape) for part, shape in zip(parts, layout.shapes)]


# ----------------------------------------------------------------------------------------------------------------------
# Mapping onto GPT1ForCausalLM
# ----------------------------------------------------------------------------------------------------------------------


def release_config(layout: ReleaseLayout, n_head: int = 12) -> GPT1Config:
    """`GPT1Config` for the release. The shapes fix every size except the head count, which must be given."""
    if not isinstance(n_head, int) or n_head <= 0 or layout.n_embd % n_head:
        raise ValueError(
            f"n_head={n_head!r} must be a positive divisor of n_embd={layout.n_embd} (read from "
            f"{layout.directory / SHAPES_FILE}). The shapes do not record the head count: GPT-1 uses 12."
        )
    return GPT1Config(
        vocab_size=layout.vocab_size,
        n_positions=layout.n_positions,
        n_embd=layout.n_embd,
        n_layer=layout.n_layer,
        n_head=n_head,
    )


def release_state_dict(arrays: list[np.ndarray], n_layer: int) -> dict[str, torch.Tensor]:
    """Our parameter name -> tensor (sharing memory with `arrays`; conv weights as transposed views).

    `lm_head.weight` is absent on purpose: it is tied to `transformer.tokens_embed.weight`.
    """
    state = {
        "transformer.positions_embed.weight": torch.from_numpy(arrays[0]),
        "transformer.tokens_embed.weight": torch.from_numpy(arrays[1]),
    }
    for layer in range(n_layer):
        block = arrays[2 + ARRAYS_PER_BLOCK * layer : 2 + ARRAYS_PER_BLOCK * (layer + 1)]
        for (_, name, is_conv_weight, _), array in zip(_BLOCK_ARRAYS, block):
            tensor = torch.from_numpy(array)
            state[f"transformer.h.{layer}.{name}"] = tensor[0].t() if is_conv_weight else tensor  # [1,in,out]->[out,in]
    return state


def _load_into_model(model: GPT1ForCausalLM, state: dict[str, torch.Tensor]) -> None:
    """Copy every tensor into the model; every (non-tied) parameter must be covered exactly once."""
    parameters = dict(model.named_parameters())  # tied lm_head.weight is listed once, as tokens_embed
    missing, unexpected = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
    if missing or unexpected:
        raise RuntimeError(
            f"GPT1ForCausalLM's parameters do not match the release mapping (missing {missing}, unexpected "
            f"{unexpected}); hf_gpt1.convert_openai_checkpoint is out of date with hf_gpt1.modeling_gpt1."
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if parameters[name].shape != tensor.shape:
                raise RuntimeError(
                    f"{name}: model has {list(parameters[name].shape)}, release gives {list(tensor.shape)}."
                )
            parameters[name].copy_(tensor)


def build_model_from_release(layout: ReleaseLayout, n_head: int = 12) -> GPT1ForCausalLM:
    """A `GPT1ForCausalLM` holding the release weights (40,478-row vocabulary, no special tokens yet)."""
    config = release_config(layout, n_head)
    model = GPT1ForCausalLM(config)
    arrays = load_release_arrays(layout)
    _load_into_model(model, release_state_dict(arrays, layout.n_layer))
    del arrays
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What a conversion read and wrote (printed by the CLI)."""

    source: Path
    destination: Path
    arrays: int
    parameters_read: int
    model_parameters: int
    config: dict[str, int]
    special_tokens: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)

    def summary(self) -> str:
        sizes = ", ".join(f"{key}={value}" for key, value in self.config.items())
        lines = [
            f"Converted {self.source} -> {self.destination}",
            f"  read {self.arrays} arrays, {self.parameters_read:,} float32 values"
            + (f" from {len(self.shards)} shards" if self.shards else ""),
            f"  model: GPT1ForCausalLM ({sizes}), {self.model_parameters:,} parameters (LM head tied)",
        ]
        if self.special_tokens:
            tokens = ", ".join(f"{token}={index}" for token, index in self.special_tokens.items())
            lines.append(f"  special tokens added (new rows ~ N(0, initializer_range)): {tokens}")
        else:
            lines.append("  special tokens: none added (plain BPE vocabulary, as released)")
        lines.append(f"  wrote: {', '.join(self.files)}")
        return "\n".join(lines)

    __str__ = summary


def _check_destination(dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"Destination {dst} already exists and is not an empty folder; choose a new path.")


def _write_atomically(dst: Path, write) -> list[str]:
    """Run `write(tmp_dir)` in a temporary sibling of `dst`, then rename it to `dst` (removed on failure)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        write(tmp)
        reset_modes_to_umask(tmp)  # mkdtemp's folder is 0700 and safetensors' weights 0600 (file_modes)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _model_config_summary(config: GPT1Config) -> dict[str, int]:
    return {key: getattr(config, key) for key in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")}


def _finish(model, tokenizer, add_special_tokens: bool) -> dict[str, int]:
    if not add_special_tokens:
        return {}
    generator = torch.Generator().manual_seed(SPECIAL_ROWS_SEED)
    add_gpt1_special_tokens(model, tokenizer, generator=generator)
    return gpt1_special_token_ids(tokenizer)


def convert_openai_checkpoint(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    n_head: int = 12,
    add_special_tokens: bool = True,
) -> ConversionReport:
    """Convert the original GPT-1 release at `src_dir` (or its `model/` subfolder) into `dst_dir`.

    Writes `GPT1ForCausalLM.save_pretrained` output (safetensors) plus the tokenizer built from the release's
    own BPE files. With `add_special_tokens` (default) the paper's `_start_`/`_delimiter_`/`_classify_`/`<pad>`
    are registered (ids 40478..40481) and their embedding rows drawn from N(0, 0.02) with a fixed seed, so
    the result is ready for fine-tuning; without it the checkpoint is exactly the released 40,478-token LM.

    Every input is validated before anything is written; `dst_dir` must not exist or be an empty folder.
    """
    dst = Path(dst_dir).expanduser()
    _check_destination(dst)
    layout = inspect_release(src_dir)
    release_config(layout, n_head)  # fail on a bad n_head before reading 466 MB
    tokenizer = _load_release_tokenizer(layout)

    model = build_model_from_release(layout, n_head)
    special_tokens = _finish(model, tokenizer, add_special_tokens)
    files = _write_atomically(dst, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return ConversionReport(
        source=layout.directory,
        destination=dst,
        arrays=len(layout.shapes),
        parameters_read=layout.num_values,
        model_parameters=model.num_parameters(),
        config=_model_config_summary(model.config),
        special_tokens=special_tokens,
        files=files,
        shards=[path.name for path in layout.shard_files],
    )


def _load_release_tokenizer(layout: ReleaseLayout):
    """The release's BPE tokenizer (from the same folder), checked against the token table's row count."""
    try:
        _find_tokenizer_files(layout.directory)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"The release's tokenizer files are missing: {error}") from error
    tokenizer = _load_bpe_tokenizer(layout.directory)
    if tokenizer.vocab_size != layout.vocab_size:
        raise ValueError(
            f"The tokenizer in {layout.directory} has {tokenizer.vocab_size} BPE tokens, but the token table in "
            f"{SHAPES_FILE} has {layout.vocab_size} rows; they must come from the same release."
        )
    return tokenizer


def convert_hf_openai_checkpoint(
    src: str | os.PathLike, dst_dir: str | os.PathLike, *, add_special_tokens: bool = True
) -> ConversionReport:
    """Re-save a transformers `openai-gpt` checkpoint (folder or Hub id) as a native `gpt1` one.

    `GPT1ForCausalLM.from_pretrained` converts the Conv1D layout on the fly; this writes the result (plus the
    GPT-1 tokenizer from the same source) so later loads need no conversion.
    """
    dst = Path(dst_dir).expanduser()
    _check_destination(dst)
    _check_hf_source(src)
    tokenizer = load_gpt1_tokenizer(src) if add_special_tokens else _load_bpe_tokenizer(src)
    model = GPT1ForCausalLM.from_pretrained(src).eval()
    if model.get_input_embeddings().weight.shape[0] < tokenizer.vocab_size:
        raise ValueError(
            f"{src}: the model has {model.get_input_embeddings().weight.shape[0]} token rows but its tokenizer "
            f"{tokenizer.vocab_size} BPE tokens."
        )
    special_tokens = _finish(model, tokenizer, add_special_tokens)
    files = _write_atomically(dst, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    state = model.state_dict()
    return ConversionReport(
        source=Path(src),
        destination=dst,
        arrays=len({tensor.data_ptr() for tensor in state.values()}),
        parameters_read=model.num_parameters(),
        model_parameters=model.num_parameters(),
        config=_model_config_summary(model.config),
        special_tokens=special_tokens,
        files=files,
    )


def _check_hf_source(src: str | os.PathLike) -> None:
    """For a local folder, require an `openai-gpt` (or already `gpt1`) config; Hub ids are checked on load."""
    if not _is_local_path(src):
        return  # a Hub id: from_pretrained gives the detailed error
    path = Path(src).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; expected a transformers openai-gpt checkpoint folder.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json; expected a transformers openai-gpt checkpoint folder.")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if model_type not in ("openai-gpt", "gpt1"):
        raise ValueError(f"{config_file} has model_type={model_type!r}; --from-hf expects an 'openai-gpt' checkpoint.")


__all__ = [
    "ConversionReport",
    "ReleaseLayout",
    "convert_openai_checkpoint",
    "convert_hf_openai_checkpoint",
    "inspect_release",
    "load_release_arrays",
    "release_state_dict",
    "release_config",
    "expected_shapes",
]
