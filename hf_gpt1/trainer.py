"""`GPT1Trainer`: the `transformers.Trainer` both training stages run on (fine-tuning in `hf_gpt1.finetuning`,
pretraining in `hf_gpt1.pretraining_run`).

What it adds to Trainer, for both stages: atomic checkpoints (written into `_checkpoint-staging/` and renamed into
place), saved weights as readable as their config.json (`file_modes`), the NaN/inf guard
(`training_callbacks.NonFiniteLossCallback`), adapter-only PEFT checkpoints, our model card on pushes
(`hub.GPT1CardTrainerMixin`), and a hook (`write_checkpoint_extras`) for files a stage keeps inside each checkpoint. For
the fine-tuning heads it also logs the two parts of L3 = L2 + λ·L1 and never gathers LM logits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .file_modes import reset_modes_to_umask
from .hub import GPT1CardTrainerMixin
from .training_callbacks import NonFiniteLossCallback, replace_dir

STAGING_DIR_NAME = "_checkpoint-staging"  # "_" prefix: Trainer's Hub uploads ignore "_*"
LOSS_PARTS = ("task_loss", "lm_loss")
LENGTH_AWARE_STRATEGIES = ("group_by_length", "batch_rebalance")  # Trainer's samplers that read example lengths


class GPT1Trainer(GPT1CardTrainerMixin, Trainer):
    """`Trainer` for the GPT-1 fine-tuning heads.

    * Optimises `outputs.loss` (= task_loss + λ·lm_loss) as usual, and logs `task_loss` and `lm_loss` next to `loss`,
      averaged over the same logging window in the same way (per optimizer step, micro-batches weighted by
      1/accumulation, mean over processes). Evaluation reports `eval_task_loss` / `eval_lm_loss` likewise.
      `lm_loss` is absent when λ = 0: the head then does not compute L1 at all.
    * Gathers only the task logits for metrics: the heads never return LM logits, and `prediction_step` refuses
      any output that looks like them (a (batch, seq, vocab) tensor gathered over an eval set would exhaust memory).
    * Saves each checkpoint into `_checkpoint-staging/` and renames it into place when complete, so a kill mid-save
      never leaves a `checkpoint-N` that `--resume-from-checkpoint auto` would pick up half-written; a subclass adds
      its own files to the staged folder in `write_checkpoint_extras`.
    * Stops at the first optimizer step whose loss (or a part of it, or the gradient norm) is NaN/inf, without saving
      that step's weights (`NonFiniteLossCallback`, installed as `self.nonfinite_guard`).
    * `train_sampling_strategy="group_by_length"` (or `"batch_rebalance"`) groups nested examples (similarity pairs in
      both orderings, multiple choice) by their longest sequence, which is what the collator pads to; Trainer alone
      would read every such example's length as its number of sequences and draw batches at random.
    * Saves a PEFT model's checkpoints as adapters without PEFT's "vocabulary was resized -> add the whole embedding"
      (the base never changes during training; the trained token rows are part of the adapter).
    * `push_to_hub` writes `self.model_card_text` (our filled card) as README.md instead of Trainer's generic card;
      without it, the card of `hub.attach_model_card` (`GPT1CardTrainerMixin`), else Trainer's.

    The model's `accepts_loss_kwargs = False` makes Trainer divide the mean loss of each micro-batch by the number of
    accumulation steps, so accumulation k × batch b gives the gradient of batch k·b.
    """

    def __init__(self, *args: Any, model_card_text: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model_card_text = model_card_text
        self._train_parts: dict[str, torch.Tensor] = {}
        self._train_part_steps = 0.0  # optimizer steps covered by _train_parts (sum of 1/accumulation per micro-batch)
        self._eval_parts: dict[str, torch.Tensor] = {}
        self._eval_count = 0
        self._staging_root: str | None = None
        self._deferred_push = False
        self.nonfinite_guard = NonFiniteLossCallback()
        self.add_callback(self.nonfinite_guard)  # after DefaultFlowCallback: it can veto that step's save

    # -- losses ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        parts = {
            name: outputs[name] for name in LOSS_PARTS if isinstance(outputs, Mapping) and outputs.get(name) is not None
        }
        if model.training:
            self.nonfinite_guard.observe("loss", loss)
            for name, value in parts.items():
                self.nonfinite_guard.observe(name, value)
        if parts:
            if model.training:
                weight = 1.0 / max(getattr(self, "current_gradient_accumulation_steps", 1), 1)
                for name, value in parts.items():
                    value = value.detach().float().mean() * weight
                    self._train_parts[name] = self._train_parts.get(name, 0) + value
                self._train_part_steps += weight
            else:
                batch = _batch_size(inputs)
                for name, value in parts.items():
                    self._eval_parts[name] = self._eval_parts.get(name, 0) + value.detach().float().mean() * batch
                self._eval_count += batch
        return (loss, outputs) if return_outputs else loss

    def _gather_sum(self, values: Sequence[torch.Tensor | float]) -> list[float]:
        """Sum each value over processes (one collective for all of them)."""
        stacked = torch.stack(
            [torch.as_tensor(v, dtype=torch.float32, device=self.args.device).reshape(()) for v in values]
        )
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.gather(stacked.unsqueeze(0)).sum(0)
        return stacked.tolist()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # The training-window log is the one with "loss"; Trainer calls it on every process (its own loss gather is a
        # collective too), so gathering here is safe.
        if "loss" in logs and self._train_parts:
            names = sorted(self._train_parts)
            totals = self._gather_sum([self._train_parts[n] for n in names] + [self._train_part_steps])
            steps = max(totals[-1], 1e-12)
            for name, total in zip(names, totals[:-1]):
                logs[name] = round(total / steps, 6)
            self._train_parts, self._train_part_steps = {}, 0.0
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ):
        self._eval_parts, self._eval_count = {}, 0
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        if self._eval_parts and output.metrics is not None:
            names = sorted(self._eval_parts)
            totals = self._gather_sum([self._eval_parts[n] for n in names] + [float(self._eval_count)])
            for name, total in zip(names, totals[:-1]):
                output.metrics[f"{metric_key_prefix}_{name}"] = total / max(totals[-1], 1.0)
        self._eval_parts, self._eval_count = {}, 0
        return output

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # fp16: GradScaler expects inf norms on overflow steps and skips them; only bf16/fp32 norms must be finite
        if grad_norm is not None and not self.args.fp16:
            self.nonfinite_guard.observe("grad_norm", grad_norm)
        return grad_norm

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if logits is not None:
            check_task_logits(logits)
        return loss, logits, labels

    # -- batches ---------------------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        # Trainer's length-aware samplers read an example's length as len(input_ids); for a nested example (both
        # orderings of a pair, one sequence per choice) that is its number of sequences. The collator pads every
        # sequence of a batch to the longest one, so that longest sequence is the length to group by: given as the
        # length column (on a copy the sampler alone sees; the batches come from the dataset as it was).
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy in LENGTH_AWARE_STRATEGIES:
            lengths = longest_sequence_lengths(dataset, self.args.length_column_name)
            if lengths is not None:
                dataset = dataset.add_column(self.args.length_column_name, lengths)
        return super()._get_train_sampler(dataset)

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, Trainer's `_save_checkpoint` sees the staging folder as its run dir.
        return self._staging_root if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint, written to `<run dir>/_checkpoint-staging/checkpoint-N` and renamed into place."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final, staging_root = os.path.join(run_dir, name), os.path.join(run_dir, STAGING_DIR_NAME)
        staged = os.path.join(staging_root, name)
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
            os.makedirs(staging_root, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._staging_root, self._deferred_push = staging_root, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process wrote its part (e.g. its RNG state) into `staged`
        if self.state.best_model_checkpoint and os.path.normpath(self.state.best_model_checkpoint) == os.path.normpath(
            staged
        ):
            self.state.best_model_checkpoint = final
        if self.args.should_save:
            self.state.save_to_json(os.path.join(staged, "trainer_state.json"))  # with the final paths
            self.write_checkpoint_extras(staged)
            replace_dir(staged, final, trash_root=staging_root)
            with contextlib.suppress(OSError):
                os.rmdir(staging_root)  # only if empty
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()
        if self._deferred_push:
            self._deferred_push = False
            self._push_from_checkpoint(final)

    def write_checkpoint_extras(self, folder: str) -> None:
        """Files a stage keeps inside each checkpoint (main process, before the rename). Nothing by default."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging_root is not None:  # pushed after the rename, from the final folder
            self._deferred_push = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not (_is_peft(self.model) and state_dict is None):
            super()._save(output_dir, state_dict=state_dict)
        else:
            self._save_adapter_only(output_dir)
        if self.args.should_save:
            # safetensors writes weights owner-only (file_modes); only the weights this save wrote, since
            # output_dir may hold the user's other files. Checkpoints are reset again, whole, by replace_dir.
            for weights in Path(output_dir).glob("*.safetensors"):
                reset_modes_to_umask(weights)

    def _save_adapter_only(self, output_dir: str) -> None:
        # Trainer's own PEFT save leaves save_embedding_layers="auto": PEFT then compares the vocabulary with the base
        # named in the adapter config (a Hub request for a Hub id) and adds the whole resized embedding to every
        # checkpoint. Reloads (best model, resume) go into the same base, so the adapter alone is what is needed.
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, save_embedding_layers=False)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Checkpoints omit the LM head, tied to the token embedding (it shares that tensor, so loading the embedding
        # restores both); Trainer's best-model reload would report it as "missing".
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())
        if tied and any(key in tied for key in load_result.missing_keys):
            load_result = load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if self.model_card_text is None:
            return super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            Path(self.args.output_dir, "README.md").write_text(self.model_card_text, encoding="utf-8")


def longest_sequence_lengths(dataset: Any, length_column: str = "length") -> list[int] | None:
    """Each example's longest sequence, for a `datasets.Dataset` of nested examples (`input_ids` of shape
    (sequences, seq)) that has no `length_column` yet; None for anything else, which Trainer's samplers handle."""
    if not isinstance(dataset, datasets.Dataset) or "input_ids" not in dataset.column_names:
        return None
    if length_column in dataset.column_names or len(dataset) == 0:
        return None
    first = dataset[0]["input_ids"]
    if not (len(first) and isinstance(first[0], (list, tuple))):
        return None
    return [max((len(seq) for seq in example), default=0) for example in dataset["input_ids"]]


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _batch_size(inputs: Mapping[str, Any]) -> int:
    for key in ("labels", "input_ids"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return 1


def check_task_logits(logits: Any) -> None:
    """Fail if evaluation would gather anything but task logits ((batch, num_labels), (batch, choices), (batch,))."""
    if isinstance(logits, (tuple, list)):
        shapes = [tuple(getattr(t, "shape", ())) for t in logits]
        raise RuntimeError(
            f"GPT1Trainer: the model returned several prediction tensors {shapes}; only task logits may be gathered "
            f"for metrics. Add the extra outputs to config.keys_to_ignore_at_inference."
        )
    if logits.dim() > 2:
        raise RuntimeError(
            f"GPT1Trainer: refusing to gather a {tuple(logits.shape)} prediction tensor (LM logits?); the fine-tuning "
            f"heads return only task logits (batch, num_labels)."
        )
