"""The pretraining output folder: who owns it, what may resume it, and how its final files are written.

* `RunIdentity` / `check_output_dir`: the identity a resumed run must match (`pretrain_run.json`, and a copy in
  every checkpoint), and refusal to mix a run with a foreign output folder or to overwrite one silently.
* `upgrade_checkpoint`: reads checkpoints written by 0.1's Accelerate loop into Trainer's layout.
* `save_final_model_atomically`, `save_final_adapter_atomically`, `save_merged_model_atomically`: the final model,
  a LoRA run's adapter and its merged model, each staged in a temporary folder and moved into place, so a reader
  sees a whole save or none.
* `JsonlLog`: the append-only `log.jsonl` metrics log, truncated to the checkpoint on resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .configuration_gpt1 import GPT1Config
from .file_modes import reset_modes_to_umask
from .pretraining import ADAPTER_CONFIG_FILE, MERGED_DIR, PretrainingError

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


class OutputDirError(PretrainingError):
    """The output folder holds something this run must not overwrite or cannot resume."""


# ----------------------------------------------------------------------------------------------------------------------
# Output folder, run identity, checkpoints
# ----------------------------------------------------------------------------------------------------------------------

RUN_FILE = "pretrain_run.json"  # the identity of the run that owns the output folder
STATE_FILE = "pretrain_state.json"  # inside every checkpoint: step, data position, identity
LOG_FILE = "log.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_FORMAT_VERSION = 1

# Fields of the identity that must match for `--resume` to continue the same trajectory. Everything else
# (learning rate, length, logging cadence) may change on resume, with a warning.
IDENTITY_FIELDS = (
    "model_type",
    "model_config",
    "init_from",
    "corpus",
    "tokenizer",
    "text_pipeline",
    "block_size",
    "val_fraction",
    "seed",
    "batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "peft",
)


@dataclass
class RunIdentity:
    """What makes two runs "the same run": a checkpoint may only be resumed by a run with equal identity."""

    model_type: str
    model_config: dict[str, Any]
    init_from: str | None
    corpus: str
    tokenizer: str
    text_pipeline: str
    block_size: int
    val_fraction: float
    seed: int
    batch_size: int
    gradient_accumulation_steps: int
    num_processes: int
    peft: dict[str, Any] | None = None  # `lora_settings(...)` of a LoRA run; None = full training (old run files too)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # informative; may change on resume

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT_VERSION, **asdict(self)}

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Human-readable list of identity fields in which `other` (a stored identity) differs from this one."""
        mine = json.loads(json.dumps(self.to_dict(), default=str))
        diffs = []
        for key in IDENTITY_FIELDS:
            if mine.get(key) != other.get(key):
                if key == "model_config" and isinstance(other.get(key), dict):
                    changed = sorted(
                        k for k in set(mine[key]) | set(other[key]) if mine[key].get(k) != other[key].get(k)
                    )
                    diffs.append(
                        "model_config: "
                        + ", ".join(f"{k} {other[key].get(k)!r} -> {mine[key].get(k)!r}" for k in changed)
                    )
                else:
                    diffs.append(f"{key}: {other.get(key)!r} -> {mine.get(key)!r}")
        return diffs


def model_config_identity(config: GPT1Config) -> dict[str, Any]:
    """The architecture-and-regularisation part of a config (ids, dtypes and bookkeeping excluded)."""
    keys = (
        "vocab_size n_positions n_embd n_layer n_head afn resid_pdrop embd_pdrop attn_pdrop layer_norm_epsilon "
        "initializer_range tie_word_embeddings"
    ).split()
    return {k: getattr(config, k) for k in keys}


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (`checkpoint-N`, never `*.tmp`) sorted by step."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class OutputDirPlan:
    """What `check_output_dir` decided: start fresh, or resume from `resume_checkpoint`."""

    resume_checkpoint: Path | None
    clean: bool  # main process should delete the previous run's artifacts (--overwrite)
    notes: list[str] = field(default_factory=list)


def check_output_dir(output_dir: Path, identity: RunIdentity, *, resume: str | None, overwrite: bool) -> OutputDirPlan:
    """Decide how to use `output_dir`, refusing to mix this run with a different one. Reads only; never writes.

    * empty / missing folder: fresh run (`--resume auto` then starts fresh too, so preemptible jobs can always
      pass it);
    * a previous run of this script (`pretrain_run.json`): `--resume [auto|DIR]` continues it if the identity
      matches (else an error listing the differences); `--overwrite` discards it; neither is an error;
    * anything else that looks like a model or checkpoint (`config.json`, `checkpoint-*` not ours): a foreign
      checkpoint -> error unless `--overwrite`.
    """
    if resume is not None and overwrite:
        raise OutputDirError("--resume and --overwrite contradict each other: continue the run, or discard it.")
    run_info = read_json(output_dir / RUN_FILE) if output_dir.is_dir() else None
    checkpoints = list_checkpoints(output_dir)

    if resume not in (None, "auto"):  # an explicit checkpoint folder
        checkpoint = Path(resume).expanduser()
        state = read_json(checkpoint / STATE_FILE)
        if not checkpoint.is_dir() or state is None:
            raise OutputDirError(
                f"--resume {checkpoint}: not a pretrain.py checkpoint (expected a checkpoint-N folder holding "
                f"{STATE_FILE}; found {'no such folder' if not checkpoint.is_dir() else 'no ' + STATE_FILE})."
            )
        _check_identity(identity, state.get("identity", {}), f"checkpoint {checkpoint}")
        if run_info is not None:  # continuing into a folder that already belongs to a run: it must be this one
            _check_identity(identity, run_info, f"the run in {output_dir}")
        elif _foreign_content(output_dir):
            raise OutputDirError(
                f"Output folder {output_dir} holds {_foreign_content(output_dir)}; resume into an empty folder or the "
                f"checkpoint's own run folder."
            )
        return OutputDirPlan(resume_checkpoint=checkpoint, clean=False)

    if run_info is not None:
        if overwrite:
            return OutputDirPlan(None, clean=True, notes=[f"--overwrite: discarding the previous run in {output_dir}"])
        if resume is None:
            latest = f"latest checkpoint {checkpoints[-1][1].name}" if checkpoints else "no checkpoint yet"
            raise OutputDirError(
                f"Output folder {output_dir} already holds a pretraining run ({latest}). Pass --resume auto to "
                f"continue it, --overwrite to discard it, or choose another --output-dir."
            )
        _check_identity(identity, run_info, f"the run in {output_dir}")
        if not checkpoints:
            return OutputDirPlan(
                None, clean=True, notes=[f"--resume auto: {output_dir} has no checkpoint yet; starting fresh"]
            )
        step, latest_path = checkpoints[-1]
        state = read_json(latest_path / STATE_FILE)
        if state is None:
            raise OutputDirError(f"{latest_path} has no readable {STATE_FILE}; it was not written by pretrain.py.")
        _check_identity(identity, state.get("identity", {}), f"checkpoint {latest_path}")
        return OutputDirPlan(latest_path, clean=False)

    foreign = _foreign_content(output_dir)
    if foreign:
        if overwrite:
            return OutputDirPlan(None, clean=True, notes=[f"--overwrite: replacing {foreign} in {output_dir}"])
        raise OutputDirError(
            f"Output folder {output_dir} holds {foreign}, which this run did not write"
            f"{' and cannot resume' if resume else ''}. Choose another --output-dir, or pass --overwrite to replace it."
        )
    return OutputDirPlan(
        None, clean=False, notes=["--resume auto: nothing to resume; starting fresh"] if resume else []
    )


def _check_identity(identity: RunIdentity, stored: dict[str, Any], where: str) -> None:
    if stored.get("model_type") not in (None, identity.model_type):
        raise OutputDirError(
            f"Cannot resume {where}: it is a model_type={stored.get('model_type')!r} run, this is {identity.model_type!r}."
        )
    diffs = identity.differences(stored)
    if diffs:
        raise OutputDirError(
            f"Cannot resume {where}: it was started with different settings, so it would not continue the same "
            f"run. Differences (stored -> now): {'; '.join(diffs)}. Use the original settings, or start a new run "
            f"with --overwrite or another --output-dir."
        )


TRAINER_STATE_FILE = "trainer_state.json"


def is_accelerate_checkpoint(checkpoint: Path) -> bool:
    """A checkpoint of 0.1's Accelerate loop (`accelerator.save_state`: no trainer_state.json, optimizer.bin,
    random_states_*.pkl), which `upgrade_checkpoint` rewrites as a Trainer checkpoint before a resume."""
    return not (checkpoint / TRAINER_STATE_FILE).is_file() and (checkpoint / "optimizer.bin").is_file()


def upgrade_checkpoint(
    checkpoint: Path,
    model: nn.Module,
    *,
    world_size: int,
    max_steps: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    logging_steps: int = 500,
    log_path: Path | None = None,
) -> None:
    """Rewrite a checkpoint of 0.1's Accelerate loop as the `transformers.Trainer` checkpoint 0.2 resumes (main
    process only; written into a staging folder and renamed over the old one, which it replaces as a whole):

    * the weights: loaded into `model` (the run's model, built as the resumed run builds it, so a mismatch is an error
      here) and saved as Trainer saves them (`save_pretrained`: the whole model, or a PeftModel's adapter);
    * `optimizer.bin` / `scheduler.bin` -> `optimizer.pt` / `scheduler.pt` (the same torch state dicts: both versions
      build AdamW on the same two decay groups in the same order, and the same warmup + cosine `LambdaLR`);
    * each `random_states_<rank>.pkl` -> `rng_state[_<rank>].pth` (python, numpy and torch CPU generator states);
    * `trainer_state.json`: the update count, the logging interval, and the metrics of `log_path` up to the update
      as the log history.

    The data position carries over exactly with one accumulation step per update. With more, Trainer ends each epoch
    with a shorter update where the old loop let updates span epochs, so the windows after the resume point can differ
    from the old run's (a warning says so)."""
    from safetensors.torch import load_file
    from transformers import TrainerControl, TrainerState

    from .training_callbacks import replace_dir

    state = read_json(checkpoint / STATE_FILE) or {}
    step = int(state["step"])
    staged = checkpoint.with_name(f"{checkpoint.name}.upgrade")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    weights = load_file(checkpoint / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight", "base_model.model.lm_head.weight"}:
        raise OutputDirError(
            f"Cannot upgrade {checkpoint}: its weights do not fit the model this run builds (unexpected "
            f"{unexpected[:5]}, missing {missing[:5]}). Resume with the settings the run was started with."
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if hasattr(model, "peft_config"):
        model.save_pretrained(staged, save_embedding_layers=False)
    else:
        model.save_pretrained(staged)
    for old, new in (("optimizer.bin", "optimizer.pt"), ("scheduler.bin", "scheduler.pt"), ("scaler.pt", "scaler.pt")):
        if (checkpoint / old).is_file():
            shutil.copy2(checkpoint / old, staged / new)
    for rank in range(world_size):
        states = torch.load(checkpoint / f"random_states_{rank}.pkl", weights_only=False)  # the run's own file
        name = "rng_state.pth" if world_size == 1 else f"rng_state_{rank}.pth"
        rng = {
            "python": states["random_state"],
            "numpy": states["numpy_random_seed"],
            "cpu": states["torch_manual_seed"],
        }
        torch.save(rng, staged / name)
    history = []
    for record in read_jsonl(log_path) if log_path is not None and log_path.is_file() else []:
        if record.get("step", 0) > step:
            continue
        if "train_loss" in record:
            keys = ("learning_rate", "grad_norm", "tokens_per_second")
            history.append(
                {"loss": record["train_loss"], **{k: record[k] for k in keys if k in record}, "step": record["step"]}
            )
        elif "val_loss" in record:
            history.append(
                {
                    "eval_loss": record["val_loss"],
                    "eval_perplexity": record.get("val_perplexity"),
                    "step": record["step"],
                }
            )
    TrainerState(
        global_step=step,
        max_steps=max_steps,
        epoch=float(state.get("epoch", 0)),
        train_batch_size=batch_size,
        logging_steps=logging_steps,  # a resumed Trainer logs on the checkpoint's schedule
        log_history=history,
        stateful_callbacks=[TrainerControl()],  # what Trainer's own checkpoints carry (it saves into this on resume)
    ).save_to_json(str(staged / TRAINER_STATE_FILE))
    shutil.copy2(checkpoint / STATE_FILE, staged / STATE_FILE)
    replace_dir(str(staged), str(checkpoint), trash_root=str(checkpoint.parent))
    _fsync_dir(checkpoint.parent)
    if gradient_accumulation_steps > 1:
        logger.warning(
            f"Upgraded {checkpoint} from 0.1's loop: with {gradient_accumulation_steps} accumulation steps the windows "
            f"after update {step} can differ from those the old loop would have read (Trainer ends each epoch with a "
            f"shorter update; the old loop let updates span epochs)."
        )
    else:
        logger.info(f"Upgraded {checkpoint} (0.1's Accelerate checkpoint) to a Trainer checkpoint.")


def _foreign_content(output_dir: Path) -> str | None:
    """Describe a model/checkpoint in `output_dir` that is not ours, or None."""
    if not output_dir.is_dir():
        return None
    config = read_json(output_dir / "config.json")
    if (output_dir / "config.json").exists():
        model_type = config.get("model_type") if config else None
        return f"a model checkpoint (config.json, model_type={model_type!r})"
    for child in sorted(output_dir.iterdir()):
        if child.name.startswith(CHECKPOINT_PREFIX) and child.is_dir() and not child.name.endswith(".tmp"):
            return f"a checkpoint folder {child.name} without {RUN_FILE}"
        if child.suffix in (".safetensors", ".bin", ".pt", ".pth") and child.is_file():
            return f"weights file {child.name}"
    return None


def clean_output_dir(output_dir: Path) -> None:
    """Delete what a previous run wrote (checkpoints, logs, final model or adapter files, the merged model, a model
    card written by PEFT or rendered for a push); keep the data cache and the rest."""
    if not output_dir.is_dir():
        return
    for child in output_dir.iterdir():
        if (child.name.startswith(CHECKPOINT_PREFIX) or child.name == MERGED_DIR) and child.is_dir():
            shutil.rmtree(child)
        elif child.name == "README.md" and _is_generated_card(child):
            child.unlink()
        elif child.name in (RUN_FILE, LOG_FILE, LOSS_CURVE_FILE, "runs", "tensorboard") or child.name.startswith(
            (".final-", "final-")
        ):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif child.is_file() and (
            child.suffix in (".safetensors", ".bin", ".pt", ".pth")
            or re.fullmatch(
                r"(configuration|conversion|modeling|modeling_outputs|input_checks|tokenization)_\w+\.py", child.name
            )  # remote code of save_pretrained
            or child.name
            in ("config.json", "generation_config.json", "model.safetensors.index.json", ADAPTER_CONFIG_FILE)
            or child.name in _TOKENIZER_FILES
        ):
            child.unlink()


_TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
}


def _is_generated_card(path: Path) -> bool:
    """A README.md this script's outputs bring: PEFT's adapter card (`library_name: peft`) or a card rendered by
    `hf_gpt1.hub` for a push (tag `hf-gpt1`). A hand-written README is not one of them."""
    try:
        from huggingface_hub import metadata_load

        metadata = metadata_load(path) or {}
    except Exception:  # unreadable or invalid YAML: not ours to delete
        return False
    tags = metadata.get("tags") or []
    return metadata.get("library_name") == "peft" or (isinstance(tags, list) and "hf-gpt1" in tags)


def remove_stale_temporaries(output_dir: Path) -> None:
    """Delete what a run killed mid-save leaves (never resumed): Trainer's `_checkpoint-staging/` (a checkpoint
    being written), `.final-*` folders (the final model or the merged model being written), `checkpoint-N.upgrade`
    (a 0.1 checkpoint being upgraded) and `checkpoint-N.tmp` folders of 0.1's loop."""
    from .trainer import STAGING_DIR_NAME

    if not output_dir.is_dir():
        return
    for child in output_dir.iterdir():
        if child.is_dir() and (
            child.name == STAGING_DIR_NAME
            or (child.name.startswith(CHECKPOINT_PREFIX) and child.name.endswith((".tmp", ".upgrade")))
            or child.name.startswith(".final-")
        ):
            shutil.rmtree(child, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename survives a power cut, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_final_model_atomically(
    accelerator: Accelerator, model: nn.Module, tokenizer: PreTrainedTokenizerBase, output_dir: Path
) -> None:
    """`save_pretrained` (+ tokenizer) into a temporary folder, then move the files into `output_dir`.

    Loadability is all-or-nothing: the old `config.json` is removed first and the new one is moved in LAST, so
    `from_pretrained(output_dir)` either finds the complete new model or no model at all. A model card rendered for
    a previous push of the run is removed (it describes the model being replaced; the next push renders a new one).
    Call on ALL processes (`accelerator.get_state_dict` gathers sharded weights under FSDP/DeepSpeed).
    """
    state_dict = accelerator.get_state_dict(model)
    tmp = output_dir / f".final-{os.getpid()}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, save_function=accelerator.save)
        tokenizer.save_pretrained(tmp)
        if _is_generated_card(output_dir / "README.md"):
            (output_dir / "README.md").unlink()
        _move_files_into(tmp, output_dir, last="config.json")
    accelerator.wait_for_everyone()


def _move_files_into(tmp: Path, target: Path, *, last: str) -> None:
    """Move every entry of `tmp` into `target`, then delete `tmp`. The file loaders look for (`last`) is removed
    from `target` first and moved in last, so `target` never pairs it with a mix of old and new files."""
    reset_modes_to_umask(tmp)  # safetensors writes weights owner-only (file_modes)
    (target / last).unlink(missing_ok=True)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != last] + ([last] if last in names else []):
        destination = target / name
        if destination.is_dir():
            shutil.rmtree(destination)
        os.replace(tmp / name, destination)
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(target)


def save_final_adapter_atomically(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    *,
    base_model_name_or_path: str,
) -> dict[str, Any] | None:
    """The LoRA counterpart of `save_final_model_atomically`: `peft_integration.save_adapter` (adapter_config.json
    naming `base_model_name_or_path`, adapter_model.safetensors with only the LoRA weights, PEFT's README.md, the
    tokenizer) into a temporary folder, then moved into `output_dir` with `adapter_config.json` last.

    Call on ALL processes (single process or DDP: the adapter is read from the main process's unwrapped model).
    Returns `save_adapter`'s sizes on the main process, None elsewhere.
    """
    from .peft_integration import save_adapter

    info = None
    tmp = output_dir / f".final-{os.getpid()}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        info = save_adapter(
            accelerator.unwrap_model(model), tmp, base_model_name_or_path=base_model_name_or_path, tokenizer=tokenizer
        )
        _move_files_into(tmp, output_dir, last=ADAPTER_CONFIG_FILE)
        info["path"] = str(output_dir)
    accelerator.wait_for_everyone()
    return info


def save_merged_model_atomically(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    *,
    extra_files: Sequence[Path] = (),
) -> Path:
    """Fold the LoRA adapter into the base weights (`peft_integration.merge_adapter`: a plain `GPT1ForCausalLM` whose
    LM head stays tied) and save it with the tokenizer as `folder` (OUTPUT_DIR/merged), loadable with
    `AutoModelForCausalLM` and publishable like any pretrained model.

    Written into a temporary sibling and swapped in by renames, so `folder` is at any moment either the previous
    complete model or the new one. `extra_files` (the run's pretrain_run.json and log.jsonl) are copied in, so the
    folder says which run produced it (the Hub model card reads them). Merging changes the model in place: call
    this on ALL processes, after `save_final_adapter_atomically` and after the last use of the model.
    """
    from .peft_integration import merge_adapter

    tmp = folder.parent / f".final-{os.getpid()}-{folder.name}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        merged = merge_adapter(accelerator.unwrap_model(model))
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in extra_files:
            if Path(path).is_file():
                shutil.copy2(path, tmp / Path(path).name)
        reset_modes_to_umask(tmp)  # safetensors writes weights owner-only (file_modes)
        _fsync_dir(tmp)
        if folder.exists():
            old = folder.parent / f"{tmp.name}.old"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    accelerator.wait_for_everyone()
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------------------------------


class JsonlLog:
    """Append-only JSON-lines metrics log (one object per line: train records and eval records)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """On resume, drop records from beyond the checkpoint (the steps that will be re-done)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by a kill; everything before it is valid
                continue
    return records


class Throughput:
    """Tokens per second over the last logging interval (not since start: the first steps include warm-up costs)."""

    def __init__(self, tokens: int = 0):
        self.last_time, self.last_tokens = time.perf_counter(), tokens

    def update(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        return rate


__all__ = [
    "OutputDirError",
    "RunIdentity",
    "check_output_dir",
    "save_final_model_atomically",
    "save_final_adapter_atomically",
    "save_merged_model_atomically",
    "JsonlLog",
]
