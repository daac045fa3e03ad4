"""Publishing GPT-1 checkpoints on the Hugging Face Hub: validation, model card, upload.

    from hf_gpt1.hub import push_folder, render_model_card

    push_folder("runs/sst2", "me/gpt1-sst2", dry_run=True)   # what would be uploaded (path + size), no network
    push_folder("runs/sst2", "me/gpt1-sst2")                 # validate, create the repo, upload one commit

The rest of the API:

    render_model_card(folder, repo_id=..., task=...)   the README.md (a huggingface_hub.ModelCard) of a checkpoint
    validate_checkpoint(folder)                         what push_folder checks, without pushing
    push_model(model, tokenizer, repo_id)               save both to a temporary folder, then push_folder it
    check_hub_access(repo_id)                           preflight for training scripts (token, write access)
    attach_model_card(trainer, task=...)                GPT1HubTrainer(push_to_hub=True): pushes with our card

A published repo loads by name like any Hub model:

    import hf_gpt1                                            # plugin installed: the Auto classes know gpt1
    model = AutoModelForSequenceClassification.from_pretrained("me/gpt1-sst2")
    # without the plugin, the modeling code uploaded next to the weights is used:
    model = AutoModelForSequenceClassification.from_pretrained("me/gpt1-sst2", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("me/gpt1-sst2")  # _start_ text _classify_ framing included

What a pushable folder holds (`save_pretrained` of a GPT-1 model and of its tokenizer write all of it):

    config.json                  model_type "gpt1" + auto_map (modeling/configuration classes)
    modeling_gpt1.py, configuration_gpt1.py   the code auto_map points to (remote code), with conversion_gpt1.py,
                                 input_checks_gpt1.py and modeling_outputs_gpt1.py (its relative imports)
    model.safetensors            or model.safetensors.index.json + its shards
    tokenizer.json, tokenizer_config.json     with the GPT-1 special tokens _start_ _delimiter_ _classify_ <pad>
    README.md                    the model card; rendered from the template `model_card.md` when missing

Training leftovers (checkpoint-*/ folders, optimizer/scheduler/RNG states, TensorBoard/log files, pickles) are
never uploaded: see `IGNORE_PATTERNS`.

Errors. `push_folder` validates the folder before any network call and reports every problem at once
(`CheckpointError`). Hub failures are re-raised as `HubPushError` saying what failed and what to do (log in,
check the namespace, check the connection), with the huggingface_hub exception chained as `__cause__`; the
local folder is left as it was (a card written for the upload is removed again if the upload fails).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from transformers import Trainer, TrainerCallback

from .model_cards import fill_model_card, is_hub_id, pretrained_model_card
from .tokenization_gpt1 import DELIMITER_TOKEN, EXTRACT_TOKEN, PAD_TOKEN, START_TOKEN

CONFIG_FILE = "config.json"
SAFE_WEIGHTS_FILE = "model.safetensors"
SAFE_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
PRETRAIN_RUN_FILE, PRETRAIN_LOG_FILE = "pretrain_run.json", "log.jsonl"  # written by scripts/pretrain.py

#: Never uploaded (fnmatch patterns on the path relative to the folder, as `HfApi.upload_folder` applies them).
IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoint-*",  # Trainer / scripts/pretrain.py checkpoints (weights + optimizer + RNG states of each save)
    "_*",  # private/temporary files and folders (Trainer's uploads skip them too; e.g. _checkpoint-staging/)
    ".final-*",  # scripts/pretrain.py's half-written final model of a killed run
    "*.tmp",
    "data-cache/*",  # scripts/pretrain.py's tokenised corpus cache (can be gigabytes)
    "last-checkpoint/*",
    "runs/*",  # TensorBoard logs (Trainer's default logging_dir, both training stages)
    "tensorboard/*",  # scripts/pretrain.py's tracker folder before 0.2 (events + hparams.yml)
    "logs/*",
    "*.log",
    "*events.out.tfevents*",
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "training_args.bin",  # a pickle of TrainingArguments (the top-level trainer_state.json, plain JSON, is kept:
    # it is the run's log, which the fine-tuning card points to)
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "pytorch_model*.bin",  # pickled weights: the safetensors file is what gets published
    "__pycache__/*",
    "*.pyc",
    ".ipynb_checkpoints/*",
    ".DS_Store",
    "*/.DS_Store",
)

# The special tokens a GPT-1 tokenizer must carry, and the config attribute recording each one's id.
_SPECIAL_TOKEN_CONFIG_IDS = {
    START_TOKEN: "start_token_id",
    DELIMITER_TOKEN: "delimiter_token_id",
    EXTRACT_TOKEN: "extract_token_id",
    PAD_TOKEN: "pad_token_id",
}
_LOGIN_HINT = "Run `hf auth login` (or `huggingface-cli login`), set the HF_TOKEN environment variable, or pass a token"


class CheckpointError(ValueError):
    """The folder is not a publishable GPT-1 checkpoint. `problems` lists every issue found."""

    def __init__(self, folder: str | os.PathLike, problems: list[str]):
        self.folder, self.problems = Path(folder), list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            f"{self.folder} is not a publishable GPT-1 checkpoint ({len(self.problems)} problem(s)); nothing was "
            f"uploaded:\n{lines}\nSave the model and its tokenizer with `model.save_pretrained(folder)` and "
            f"`tokenizer.save_pretrained(folder)` (after `import hf_gpt1`), then push again."
        )


class HubPushError(RuntimeError):
    """Creating the repo or uploading failed. `reason` is one of: "no_token", "unauthorized", "forbidden",
    "network", "offline", "http". The huggingface_hub exception is chained as `__cause__`."""

    def __init__(self, message: str, *, reason: str, repo_id: str, status: int | None = None):
        super().__init__(message)
        self.reason, self.repo_id, self.status = reason, repo_id, status


@dataclass(frozen=True)
class UploadFile:
    """One file of an upload: its path in the repo, its size in bytes, and whether `push_folder` renders it
    (the model card) rather than taking it from the folder as it is."""

    path: str
    size: int
    rendered: bool = False


@dataclass
class PushResult:
    """What `push_folder` uploaded (or, with `dry_run=True`, would upload)."""

    repo_id: str
    folder: Path
    files: list[UploadFile]
    dry_run: bool
    commit_url: str | None = None
    commit_oid: str | None = None
    repo_url: str | None = None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> str:
        verb = "Would upload" if self.dry_run else "Uploaded"
        width = max((len(f.path) for f in self.files), default=0)
        lines = [
            f"{verb} {len(self.files)} file(s), {_human_size(self.total_size)}, from {self.folder} to {self.repo_id}:"
        ]
        for f in self.files:
            note = "  (model card, rendered)" if f.rendered else ""
            lines.append(f"  {f.path:<{width}}  {_human_size(f.size):>10}{note}")
        if self.commit_url:
            lines.append(f"Commit: {self.commit_url}")
        return "\n".join(lines)


@dataclass
class CheckpointSummary:
    """What `validate_checkpoint` found in a folder."""

    folder: Path
    config: dict[str, Any]
    weight_files: list[str]
    tokenizer_files: list[str]
    special_token_ids: dict[str, int]
    card_exists: bool  # a README.md that is kept as it is (hand-written or already rendered)
    card: ModelCard | None = None  # the card that would be uploaded as README.md when `card_exists` is False
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------


def validate_checkpoint(
    output_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    card_kwargs: Mapping[str, Any] | None = None,
    raise_on_error: bool = True,
) -> CheckpointSummary:
    """Check that `output_dir` holds a complete GPT-1 checkpoint, without any network access.

    Checked: `config.json` (valid JSON, `model_type` "gpt1", an `auto_map` whose every entry names a class defined
    in a `.py` file of the folder); safetensors weights present and readable (header parses, the file is as long
    as the header says, every shard of an index exists, the token embedding has `config.vocab_size` rows);
    tokenizer files with the four GPT-1 special tokens, whose ids agree with the ids recorded in the config;
    the model card: an existing README.md must have parseable YAML metadata, a missing (or transformers'
    auto-generated) one must be renderable (`render_model_card(output_dir, repo_id=repo_id, **card_kwargs)`; the
    result is `summary.card`). Raises `CheckpointError` listing every problem (or, with `raise_on_error=False`,
    returns them in `summary.problems`).
    """
    folder = Path(output_dir).expanduser()
    problems: list[str] = []
    summary = CheckpointSummary(folder, {}, [], [], {}, False, problems=problems)
    if not folder.is_dir():
        problems.append(f"{folder} does not exist or is not a folder")
        return _finish(summary, raise_on_error)

    summary.config = _check_config(folder, problems)
    summary.weight_files = _check_weights(folder, summary.config, problems)
    summary.tokenizer_files, summary.special_token_ids = _check_tokenizer(folder, summary.config, problems)
    summary.card_exists, summary.card = _check_card(folder, problems, repo_id, card_kwargs or {})
    return _finish(summary, raise_on_error)


def _finish(summary: CheckpointSummary, raise_on_error: bool) -> CheckpointSummary:
    if summary.problems and raise_on_error:
        raise CheckpointError(summary.folder, summary.problems)
    return summary


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{path.name} cannot be read as JSON ({error})")
        return None


def _check_config(folder: Path, problems: list[str]) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        problems.append(f"{CONFIG_FILE} is missing")
        return {}
    config = _read_json(path, problems)
    if config is None:
        return {}
    if not isinstance(config, dict):
        problems.append(f"{CONFIG_FILE} must hold a JSON object")
        return {}
    if config.get("model_type") != "gpt1":
        problems.append(
            f"{CONFIG_FILE} has model_type={config.get('model_type')!r}, expected 'gpt1' (a checkpoint saved by an "
            f"hf_gpt1 model; convert openai-gpt checkpoints with `GPT1ForCausalLM.from_pretrained(...)` first)"
        )
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        problems.append(
            f"{CONFIG_FILE} has no auto_map, so the model cannot load where hf_gpt1 is not installed; save it with "
            f"`import hf_gpt1` in effect (the package registers its classes for auto_map)"
        )
        return config
    if "AutoConfig" not in auto_map:
        problems.append(f"{CONFIG_FILE}: auto_map has no AutoConfig entry")
    for auto_class, reference in auto_map.items():
        references = reference if isinstance(reference, list) else [reference]
        for ref in references:
            if ref is None:
                continue
            problem = _check_code_reference(folder, auto_class, ref)
            if problem:
                problems.append(problem)
    return config


def _check_code_reference(folder: Path, auto_class: str, reference: str) -> str | None:
    """'module.Class' must resolve to a class defined in `module.py` of the folder ('repo--module.Class' points to
    another repo and is not checked here)."""
    if "--" in reference:
        return None
    module, _, class_name = reference.rpartition(".")
    if not module or not class_name:
        return f"{CONFIG_FILE}: auto_map[{auto_class!r}] = {reference!r} is not of the form 'module.Class'"
    code_file = folder / (module.replace(".", "/") + ".py")
    if not code_file.is_file():
        return (
            f"{CONFIG_FILE}: auto_map[{auto_class!r}] points to {code_file.name}, which is not in the folder (the "
            f"modeling code must be uploaded next to the weights)"
        )
    try:
        source = code_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"{code_file.name} cannot be read ({error})"
    if f"class {class_name}(" not in source and f"class {class_name}:" not in source:
        return f"{CONFIG_FILE}: auto_map[{auto_class!r}] names {class_name}, which {code_file.name} does not define"
    return None


def _check_weights(folder: Path, config: Mapping[str, Any], problems: list[str]) -> list[str]:
    index_path = folder / SAFE_WEIGHTS_INDEX_FILE
    if index_path.is_file():
        index = _read_json(index_path, problems)
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            problems.append(f"{SAFE_WEIGHTS_INDEX_FILE} has no weight_map")
            return [SAFE_WEIGHTS_INDEX_FILE]
        shards = sorted(set(index["weight_map"].values()))
        files = [SAFE_WEIGHTS_INDEX_FILE, *shards]
    elif (folder / SAFE_WEIGHTS_FILE).is_file():
        shards = files = [SAFE_WEIGHTS_FILE]
    else:
        pickled = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
        hint = (
            f"; found {', '.join(pickled)}: re-save with `model.save_pretrained(folder)` (safetensors is the default)"
            if pickled
            else ""
        )
        problems.append(f"no weights: neither {SAFE_WEIGHTS_FILE} nor {SAFE_WEIGHTS_INDEX_FILE}{hint}")
        return []
    tensor_shapes: dict[str, list[int]] = {}
    for shard in shards:
        path = folder / shard
        if not path.is_file():
            problems.append(f"weights shard {shard} (listed in {SAFE_WEIGHTS_INDEX_FILE}) is missing")
            continue
        try:
            tensor_shapes.update(_read_safetensors_header(path))
        except ValueError as error:
            problems.append(f"{shard} is not a readable safetensors file: {error}")
    embedding = next((shape for name, shape in tensor_shapes.items() if name.endswith("tokens_embed.weight")), None)
    vocab_size = config.get("vocab_size")
    if embedding is not None and isinstance(vocab_size, int) and embedding[0] != vocab_size:
        problems.append(
            f"the token embedding in the weights has {embedding[0]} rows but {CONFIG_FILE} says vocab_size="
            f"{vocab_size}; re-save the model after `add_special_tokens`"
        )
    return files


def _read_safetensors_header(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read by `safetensors` from the file's header (no tensor data is loaded); ValueError if
    the file is truncated, padded or not a safetensors file (safetensors checks the header against the file size)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except SafetensorError as error:
        raise ValueError(f"truncated or corrupted ({error})") from error
    if not shapes:
        raise ValueError("no tensors")
    return shapes


def _check_tokenizer(folder: Path, config: Mapping[str, Any], problems: list[str]) -> tuple[list[str], dict[str, int]]:
    files: list[str] = []
    if not (folder / TOKENIZER_CONFIG_FILE).is_file():
        problems.append(
            f"{TOKENIZER_CONFIG_FILE} is missing: save the tokenizer too (`tokenizer.save_pretrained(folder)`)"
        )
    else:
        files.append(TOKENIZER_CONFIG_FILE)
    token_ids: dict[str, int] = {}
    if (folder / TOKENIZER_FILE).is_file():
        files.append(TOKENIZER_FILE)
        data = _read_json(folder / TOKENIZER_FILE, problems)
        if isinstance(data, dict):
            for entry in data.get("added_tokens") or []:
                if isinstance(entry, dict) and entry.get("content") in _SPECIAL_TOKEN_CONFIG_IDS:
                    token_ids[entry["content"]] = entry.get("id")
    elif (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        files += [VOCAB_FILE, MERGES_FILE]
        token_ids = _special_ids_from_tokenizer_config(folder)
    else:
        problems.append(f"no tokenizer vocabulary: neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE}")
        return files, token_ids
    missing = [token for token in _SPECIAL_TOKEN_CONFIG_IDS if token not in token_ids]
    if missing:
        problems.append(
            f"the tokenizer lacks the GPT-1 special token(s) {missing}: load it with "
            f"`hf_gpt1.load_gpt1_tokenizer(...)` and call `hf_gpt1.add_special_tokens(model, tokenizer)` before saving"
        )
    for token, attribute in _SPECIAL_TOKEN_CONFIG_IDS.items():
        recorded = config.get(attribute)
        if token in token_ids and recorded is not None and recorded != token_ids[token]:
            problems.append(
                f"{CONFIG_FILE} has {attribute}={recorded} but the tokenizer gives {token} id {token_ids[token]}: the "
                f"model and the tokenizer do not belong together"
            )
    vocab_size = config.get("vocab_size")
    if token_ids and isinstance(vocab_size, int) and max(token_ids.values()) >= vocab_size:
        problems.append(
            f"the tokenizer's special token ids go up to {max(token_ids.values())} but the model has vocab_size="
            f"{vocab_size}; call `hf_gpt1.add_special_tokens(model, tokenizer)` and re-save the model"
        )
    return files, token_ids


def _special_ids_from_tokenizer_config(folder: Path) -> dict[str, int]:
    """Special token ids from `added_tokens_decoder` (vocab.json + merges.txt layout without tokenizer.json)."""
    try:
        decoder = json.loads((folder / TOKENIZER_CONFIG_FILE).read_text(encoding="utf-8")).get("added_tokens_decoder")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    ids: dict[str, int] = {}
    for index, entry in (decoder or {}).items():
        if isinstance(entry, dict) and entry.get("content") in _SPECIAL_TOKEN_CONFIG_IDS:
            ids[entry["content"]] = int(index)
    return ids


# Markers of the cards transformers writes on its own (`push_to_hub`'s default card, `Trainer.create_model_card`):
# such a README is replaced by the GPT-1 card; any other README is the user's and is kept.
_AUTO_GENERATED_CARD_MARKERS = (
    "This model card has been automatically generated.",
    "This model card has been generated automatically according to the information the Trainer had access to.",
)


def _card_is_kept(folder: Path) -> bool:
    path = folder / CARD_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    return not any(marker in text for marker in _AUTO_GENERATED_CARD_MARKERS)


def _check_card(
    folder: Path, problems: list[str], repo_id: str | None, card_kwargs: Mapping[str, Any]
) -> tuple[bool, ModelCard | None]:
    if _card_is_kept(folder):
        try:
            ModelCard.load(folder / CARD_FILE)
        except Exception as error:  # yaml errors, invalid model-index, ...
            problems.append(
                f"{CARD_FILE} has invalid metadata ({type(error).__name__}: {error}); fix it or delete it "
                f"to have the card rendered"
            )
        return True, None
    if problems:  # the card is rendered from the config and the results: only meaningful once the rest is sound
        return False, None
    try:
        return False, render_model_card(folder, repo_id=repo_id, **card_kwargs)
    except Exception as error:  # unknown task, unreadable eval_results.json, template errors, ...
        problems.append(f"the model card cannot be rendered ({type(error).__name__}: {error})")
        return False, None


# ----------------------------------------------------------------------------------------------------------------------
# Upload
# ----------------------------------------------------------------------------------------------------------------------


def list_upload_files(
    output_dir: str | os.PathLike, *, ignore_patterns: Iterable[str] = (), card: ModelCard | None = None
) -> list[UploadFile]:
    """The files `push_folder` uploads from `output_dir`, sorted: everything but `IGNORE_PATTERNS` (and
    huggingface_hub's own `.git/` / `.cache/huggingface/` exclusions), plus the rendered card if `card` is given."""
    folder = Path(output_dir).expanduser().resolve()
    relpaths = {path.relative_to(folder).as_posix(): path for path in sorted(folder.glob("**/*")) if path.is_file()}
    patterns = [*IGNORE_PATTERNS, *ignore_patterns, *DEFAULT_IGNORE_PATTERNS]
    kept = list(filter_repo_objects(relpaths, ignore_patterns=patterns))
    files = [UploadFile(path, relpaths[path].stat().st_size) for path in kept if not (card and path == CARD_FILE)]
    if card is not None:
        files.append(UploadFile(CARD_FILE, len(str(card).encode("utf-8")), rendered=True))
    return sorted(files, key=lambda f: f.path)


def push_folder(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload GPT-1 checkpoint",
    revision: str | None = None,
    ignore_patterns: Iterable[str] = (),
    card_kwargs: Mapping[str, Any] | None = None,
) -> PushResult:
    """Validate `output_dir`, create `repo_id` (if needed) and upload the folder as one commit.

    Args:
        output_dir: a folder written by `model.save_pretrained` + `tokenizer.save_pretrained` (a fine-tuning or
            pretraining output directory works as it is: checkpoints and training state are skipped).
        repo_id: "namespace/name" (or just "name" for the token's own namespace).
        private: create the repo private (no effect on an existing repo).
        token: a Hub token with write access; default: HF_TOKEN or the token stored by `hf auth login`.
        dry_run: validate and list what would be uploaded (path + size), without any network call.
        commit_message, revision: of the upload commit (`revision`: an existing branch, default main).
        ignore_patterns: more fnmatch patterns to skip, on top of `IGNORE_PATTERNS`.
        card_kwargs: passed to `render_model_card` when the card is rendered (no README.md in the folder, or one
            auto-generated by transformers). A hand-written README.md is uploaded as it is.

    The rendered card is written to `output_dir/README.md` just before the upload, so the local checkpoint and the
    Hub repo carry the same card; if the upload fails it is removed again (and a replaced auto-generated README is
    restored), so a failed push leaves the folder exactly as it was.

    Returns a `PushResult` (`.summary()` prints the file list). Raises `CheckpointError` (folder not publishable,
    before any network call) or `HubPushError` (Hub refused or unreachable).
    """
    folder = Path(output_dir).expanduser()
    card = validate_checkpoint(folder, repo_id=repo_id, card_kwargs=card_kwargs).card
    files = list_upload_files(folder, ignore_patterns=ignore_patterns, card=card)
    result = PushResult(repo_id, folder, files, dry_run)
    if dry_run:
        return result

    from huggingface_hub import HfApi

    token = _token_or_error(
        token,
        repo_id,
        f"Cannot push {folder} to {repo_id}",
        f"(push_folder(token=...) / --token); it needs write access. Nothing was uploaded and {folder} is unchanged.",
    )
    api = HfApi(token=token)
    ignore = [*IGNORE_PATTERNS, *ignore_patterns]
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as error:
        raise _explain(error, "create the repo", repo_id, folder, api.endpoint) from error
    if repo_url.repo_id != repo_id and card is not None:  # "name" became "namespace/name": the card names the repo
        card = render_model_card(folder, repo_id=repo_url.repo_id, **dict(card_kwargs or {}))
    result.repo_id, result.repo_url = repo_url.repo_id, str(repo_url)

    card_path = folder / CARD_FILE
    previous_card = card_path.read_bytes() if card is not None and card_path.is_file() else None
    try:
        if card is not None:
            card.save(card_path)
        commit = api.upload_folder(
            repo_id=result.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            ignore_patterns=list(ignore),  # upload_folder extends the list it is given: pass a copy
        )
    except BaseException as error:
        if card is not None:  # leave the folder as it was
            if previous_card is None:
                card_path.unlink(missing_ok=True)
            else:
                card_path.write_bytes(previous_card)
        if isinstance(error, Exception):
            raise _explain(error, "upload the files", result.repo_id, folder, api.endpoint) from error
        raise
    result.commit_url, result.commit_oid = commit.commit_url, commit.oid
    return result


def _token_or_error(token: str | None, repo_id: str, what: str, where: str) -> str:
    """The token to push with (given, else the logged-in one), or a `HubPushError` saying how to provide one."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubPushError(
            f"{what}: no Hugging Face token found. {_LOGIN_HINT} {where}", reason="no_token", repo_id=repo_id
        )
    return token


def check_hub_access(repo_id: str, *, token: str | None = None) -> str:
    """Preflight for training scripts: fail before hours of training, not after, if `push_folder` could not push.

    Checks that a token is available and valid, is not read-only, and that the repo's namespace is the token's user
    or one of its organizations (one `whoami` request, nothing is created). Returns the full repo id
    ("namespace/name"). Raises `HubPushError` with the same messages as `push_folder`.
    """
    from huggingface_hub import HfApi

    token = _token_or_error(
        token, repo_id, f"Cannot push to {repo_id}", "(--hub-token / token=...); it needs write access."
    )
    api = HfApi(token=token)
    try:
        me = api.whoami()
    except Exception as error:
        raise _explain(error, "check the token", repo_id, None, api.endpoint) from error
    namespace, _, name = repo_id.rpartition("/")
    namespace = namespace or me.get("name", "")
    orgs = {org.get("name") for org in me.get("orgs") or []}
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    problem = None
    if role == "read":
        problem = f"the token of '{me.get('name')}' is read-only"
    elif namespace != me.get("name") and namespace not in orgs:
        problem = f"'{me.get('name')}' is neither '{namespace}' nor a member of an organization of that name"
    if problem:
        raise HubPushError(
            f"Cannot push to {namespace}/{name}: {problem}. Check the namespace '{namespace}' in the repo id: it must "
            f"be your user name or an organization where you have write access, and the token must have the write "
            f"role (see `hf auth whoami`).",
            reason="forbidden",
            repo_id=repo_id,
        )
    return f"{namespace}/{name}"


def push_model(model, tokenizer, repo_id: str, *, dry_run: bool = False, **push_kwargs: Any) -> PushResult:
    """Publish an in-memory GPT-1 model and its tokenizer in one commit: `save_pretrained` both into a temporary
    folder, then `push_folder` it (validation, rendered card, clear errors). `push_kwargs` go to `push_folder`
    (`private`, `token`, `commit_message`, `revision`, `card_kwargs`, ...).

    Unlike `model.push_to_hub` + `tokenizer.push_to_hub` (two commits, transformers' generic card), the repo is
    complete and carries the GPT-1 card from its first commit.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hf_gpt1_push_") as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        result = push_folder(staging, repo_id, dry_run=dry_run, **push_kwargs)
    return result


def upload_model_card(model, repo_id: str, *, token: str | None = None, revision: str | None = None) -> None:
    """Upload the GPT-1 card for `model` as the repo's README.md (what `GPT1PreTrainedModel.push_to_hub` calls after
    transformers' own push, whose README is a generic template). Reads only the model's config."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="hf_gpt1_card_") as staging:
        model.config.save_pretrained(staging)
        card = render_model_card(staging, repo_id=repo_id)
    api = HfApi(token=token)
    try:
        api.upload_file(
            path_or_fileobj=str(card).encode("utf-8"),
            path_in_repo=CARD_FILE,
            repo_id=repo_id,
            revision=revision,
            commit_message="GPT-1 model card (hf-gpt1)",
        )
    except Exception as error:  # the weights are already pushed; say what is missing
        raise _explain(error, "upload the model card", repo_id, None, api.endpoint) from error


def _explain(error: Exception, action: str, repo_id: str, folder: Path | None, endpoint: str) -> Exception:
    """A `HubPushError` saying what failed and what to do, for a huggingface_hub / network exception."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    unchanged = f"Nothing was uploaded and {folder} is unchanged." if folder is not None else "Nothing was uploaded."
    failed = f"Could not {action} for {repo_id} on {endpoint}"
    if isinstance(error, OfflineModeIsEnabled):
        return HubPushError(
            f"{failed}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to push. {unchanged}",
            reason="offline",
            repo_id=repo_id,
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        server_message = (getattr(error, "server_message", None) or str(error).splitlines()[0]).strip()
        namespace = repo_id.split("/")[0] if "/" in repo_id else "your namespace"
        if status == 401:
            return HubPushError(
                f"{failed}: the Hub did not accept the credentials (HTTP 401: {server_message}). The token is missing, "
                f"invalid or expired. {_LOGIN_HINT} with write access. {unchanged}",
                reason="unauthorized",
                repo_id=repo_id,
                status=status,
            )
        if isinstance(error, RevisionNotFoundError):
            return HubPushError(
                f"{failed}: the branch does not exist ({server_message}). Create it first "
                f"(`HfApi().create_branch({repo_id!r}, branch=...)`) or push to main. {unchanged}",
                reason="http",
                repo_id=repo_id,
                status=status,
            )
        if status == 403 or isinstance(error, RepositoryNotFoundError):
            return HubPushError(
                f"{failed}: permission denied (HTTP {status}: {server_message}). Check the namespace '{namespace}' in "
                f"the repo id: it must be your user name or an organization where you have write access, and the "
                f"token must have the write role (see `hf auth whoami`). {unchanged}",
                reason="forbidden",
                repo_id=repo_id,
                status=status,
            )
        return HubPushError(
            f"{failed}: the Hub answered HTTP {status}: {server_message}. {unchanged}",
            reason="http",
            repo_id=repo_id,
            status=status,
        )
    if _is_network_error(error):
        return HubPushError(
            f"{failed}: the Hub is unreachable ({type(error).__name__}: {error}). Check the network connection, "
            f"proxy settings and the HF_ENDPOINT variable, then push again. {unchanged}",
            reason="network",
            repo_id=repo_id,
        )
    return HubPushError(f"{failed}: {type(error).__name__}: {error}. {unchanged}", reason="http", repo_id=repo_id)


def _is_network_error(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    # huggingface_hub talks through httpx (vendored as `httpx2` in recent releases): TransportError covers
    # refused connections, DNS failures, timeouts and dropped connections.
    return any(cls.__name__ in ("TransportError", "ConnectError", "NetworkError") for cls in type(error).__mro__)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------


def render_model_card(
    output_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    task: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    datasets: str | list[str] | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card (README.md) of the checkpoint in `output_dir`, with valid Hub metadata.

    Everything is read from the folder unless given: `config.json` (architecture -> pipeline tag, size),
    `eval_results.json` (the metrics, and - as `scripts/finetune.py` writes it - the `task` and the run's
    `settings`, i.e. its hyperparameters); for a `scripts/pretrain.py` output folder, `pretrain_run.json`
    (hyperparameters) and the last validation record of `log.jsonl` (loss, perplexity).

    * A fine-tuned checkpoint (a `task` known from the arguments or from `eval_results.json`) gets the card of
      `hf_gpt1.finetuning.fill_model_card`, rendered from the repository's `model_card.md` template: the same card
      `scripts/finetune.py` writes, so there is one source for the card's content. Its YAML header (built with
      `huggingface_hub.ModelCardData`) has library_name, pipeline_tag, tags, datasets, license, base_model and a
      `model-index` with every eval metric; the body the hyperparameters and the paper's citation.
    * Any other checkpoint (a pretrained LM, a bare `save_pretrained`) gets a shorter card with the same metadata
      keys: `model-index` only when the dataset of its metrics is known (`datasets=` or `settings["dataset"]`).

    `repo_id` names the model in the card and in its usage snippet (default: the folder's name).
    """
    from task_adapters import get_task_spec

    folder = Path(output_dir).expanduser()
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    results: dict[str, Any] = {}
    if (folder / EVAL_RESULTS_FILE).is_file():
        loaded = json.loads((folder / EVAL_RESULTS_FILE).read_text(encoding="utf-8"))
        results = loaded if isinstance(loaded, dict) else {}
    pretrain_settings, pretrain_metrics = _pretraining_record(folder)
    metrics = dict((results or pretrain_metrics) if metrics is None else metrics)
    settings = dict((results.get("settings") or pretrain_settings) if settings is None else settings)
    task = task or results.get("task") or settings.get("task")
    model_name = repo_id or folder.resolve().name
    if base_model is None and is_hub_id(settings.get("model")):
        base_model = settings["model"]

    if task:
        text = fill_model_card(
            spec=get_task_spec(task),
            metrics=metrics,
            settings=settings,
            model_name=model_name,
            base_model=base_model,
            template_path=template_path,
            usage_path=repo_id or str(folder),
        )
        return ModelCard(text)
    return pretrained_model_card(config, metrics, settings, model_name, repo_id or str(folder), base_model, datasets)


def _pretraining_record(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, metrics) of a `scripts/pretrain.py` output folder; empty dicts for any other folder."""
    settings: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    try:
        run = json.loads((folder / PRETRAIN_RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        run = None
    if isinstance(run, dict):
        settings.update(run.get("hyperparameters") or {})
        for key in (
            "block_size",
            "batch_size",
            "gradient_accumulation_steps",
            "num_processes",
            "val_fraction",
            "seed",
            "init_from",
        ):
            if run.get(key) is not None:
                settings[key] = run[key]
        if run.get("val_fraction") is not None:
            settings.setdefault("eval_split", f"validation (last {run['val_fraction']:g} of the token windows)")
    try:
        lines = (folder / PRETRAIN_LOG_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("val_loss"), (int, float)):
            metrics = {"eval_loss": record["val_loss"]}
            if isinstance(record.get("val_perplexity"), (int, float)):
                metrics["perplexity"] = record["val_perplexity"]
            settings.setdefault("global_step", record.get("step"))
            break
    return settings, metrics


# ----------------------------------------------------------------------------------------------------------------------
# Trainer(push_to_hub=True)
# ----------------------------------------------------------------------------------------------------------------------


def settings_from_trainer(trainer) -> dict[str, Any]:
    """The run's hyperparameters for the card, from a `Trainer` (same keys as `finetuning.run_settings` where they
    overlap)."""
    args, model = trainer.args, trainer.model
    config = getattr(model, "config", None)
    world = max(int(getattr(args, "world_size", 1) or 1), 1)
    settings: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "batch_size_per_device": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": world,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "clf_dropout": getattr(config, "clf_pdrop", None),
        "lm_coef": getattr(config, "lm_coef", None),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "seed": args.seed,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        "global_step": trainer.state.global_step,
    }
    if hasattr(model, "num_parameters"):
        settings["num_parameters"] = int(model.num_parameters())
    return {k: v for k, v in settings.items() if v is not None}


def _latest_eval_metrics(log_history: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for entry in log_history:
        if any(key.startswith("eval_") for key in entry):
            latest = dict(entry)
    return latest


def _write_trainer_card(trainer, output_dir: str | os.PathLike, card_kwargs: Mapping[str, Any]) -> None:
    folder = Path(output_dir)
    if not (folder / CONFIG_FILE).is_file():
        return
    kwargs = dict(card_kwargs)
    kwargs.setdefault("repo_id", getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id)
    if kwargs.get("metrics") is None and not (folder / EVAL_RESULTS_FILE).is_file():
        kwargs["metrics"] = _latest_eval_metrics(trainer.state.log_history)
    if kwargs.get("settings") is None:
        kwargs["settings"] = settings_from_trainer(trainer)
    # Atomically: a checkpoint push still running in the background may be reading the folder.
    _replace_atomically(folder / CARD_FILE, str(render_model_card(folder, **kwargs)).encode("utf-8"))


class HubCardCallback(TrainerCallback):
    """Makes every push of a `Trainer(push_to_hub=True)` a loadable GPT-1 repo with our model card.

    Trainer's checkpoint pushes (`hub_strategy="every_save"`, the default) upload `args.output_dir` after copying in
    only the config and weights: the modeling/configuration code that `config.json`'s `auto_map` points to would be
    missing, so the repo would not load with `trust_remote_code=True`. At each push this callback writes the code
    files and the config, and renders the card (metrics of the latest evaluation, hyperparameters from the
    TrainingArguments). Use `attach_model_card(trainer)`, which also gives the final `trainer.push_to_hub()` the card.
    """

    def __init__(self, trainer, **card_kwargs: Any):
        self.trainer, self.card_kwargs = trainer, card_kwargs

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        model = model if model is not None else self.trainer.model
        if not args.should_save or model is None or getattr(model, "_auto_class", None) is None:
            return  # e.g. a PEFT-wrapped model: Trainer uploads the adapter, no remote code involved
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        _save_remote_code(model, output_dir)
        if not (output_dir / CONFIG_FILE).is_file():  # first push: Trainer copies it in only after this event
            _replace_atomically(output_dir / CONFIG_FILE, model.config.to_json_string(use_diff=True).encode("utf-8"))
        _write_trainer_card(self.trainer, output_dir, self.card_kwargs)


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` unless it already holds it. Through a "_"-prefixed temporary file (Trainer's uploads
    ignore "_*") and a rename, so a background upload reading the folder never sees a half-written file."""
    if path.is_file() and path.read_bytes() == data:
        return
    temporary = path.with_name(f"_{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _save_remote_code(model, output_dir: Path) -> None:
    """The files `save_pretrained` copies next to the weights for `auto_map` (modeling + configuration code)."""
    import tempfile

    from transformers.dynamic_module_utils import custom_object_save

    with tempfile.TemporaryDirectory() as staging:
        config = copy.deepcopy(model.config)  # custom_object_save records auto_map on the config it is given
        for path in custom_object_save(model, staging, config=config) or []:
            _replace_atomically(output_dir / Path(path).name, Path(path).read_bytes())


class GPT1CardTrainerMixin:
    """`Trainer.create_model_card`, overridden: the README.md of `args.output_dir` becomes the GPT-1 card.

    Mixed into a `Trainer` subclass before `Trainer` (`class MyTrainer(GPT1CardTrainerMixin, Trainer)`;
    `GPT1HubTrainer` is that class, `hf_gpt1.trainer.GPT1Trainer` includes it). The card is rendered only once
    `attach_model_card(trainer, **card_kwargs)` has set `gpt1_card_kwargs`; until then Trainer's own card is written.
    """

    gpt1_card_kwargs: dict[str, Any] | None = None

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if self.gpt1_card_kwargs is None:
            return super().create_model_card(*args, **kwargs)  # type: ignore[misc]
        if self.is_world_process_zero():  # type: ignore[attr-defined]
            _write_trainer_card(self, self.args.output_dir, self.gpt1_card_kwargs)  # type: ignore[attr-defined]


class GPT1HubTrainer(GPT1CardTrainerMixin, Trainer):
    """A plain `Trainer` whose pushes carry the GPT-1 model card (see `attach_model_card`)."""


def attach_model_card(trainer, **card_kwargs: Any):
    """Give a `Trainer` with `push_to_hub=True` the GPT-1 model card and complete uploads. Returns `trainer`.

    `trainer` must be a `GPT1CardTrainerMixin` trainer: `GPT1HubTrainer` in place of `Trainer`, or
    `hf_gpt1.trainer.GPT1Trainer`. `card_kwargs` go to `render_model_card` (e.g. `task="sst2"` for a fine-tuned
    model, `base_model=...`). The final `trainer.push_to_hub()` (or `trainer.save_model()` with push_to_hub=True)
    renders the card from the saved folder - its `eval_results.json` if the run wrote one, else the latest evaluation
    in the log - in place of Trainer's generic card (`GPT1CardTrainerMixin.create_model_card`); checkpoint pushes get
    the code files and the card too (`HubCardCallback`).
    """
    if not isinstance(trainer, GPT1CardTrainerMixin):
        raise TypeError(
            f"attach_model_card needs a trainer whose create_model_card writes the GPT-1 card; "
            f"{type(trainer).__name__} is not one. Build it as hf_gpt1.hub.GPT1HubTrainer(...) (a transformers.Trainer "
            f"subclass, same arguments) or hf_gpt1.trainer.GPT1Trainer, or subclass "
            f"(hf_gpt1.hub.GPT1CardTrainerMixin, Trainer)."
        )
    trainer.gpt1_card_kwargs = dict(card_kwargs)
    trainer.add_callback(HubCardCallback(trainer, **card_kwargs))
    return trainer
