"""What both training stages do on the way: stop cleanly on a signal, stop at a non-finite loss, replace folders
atomically.

* `SignalFlag` - SIGTERM/SIGINT -> a flag checked between steps;
* `SaveOnSignalCallback` - that flag as a `transformers.Trainer` callback: checkpoint at the end of the step, then
  stop (both stages; pretraining installs it before preparing its data, so an early signal waits for the first step);
* `NonFiniteLossError` - a NaN/inf loss or gradient norm: the step, the last good checkpoint, the values;
* `NonFiniteLossCallback` - the Trainer guard (installed by `hf_gpt1.trainer.GPT1Trainer`) that stops training
  before the bad step is saved; the stages then raise `NonFiniteLossError`;
* `replace_dir` - rename a finished staging folder into place (checkpoints, merged models).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .file_modes import reset_modes_to_umask

logger = logging.getLogger(__name__)


def replace_dir(source: str, target: str, trash_root: str) -> None:
    """Move `source` to `target` atomically; an existing `target` (a re-save of the same step) is moved aside first.
    `source`'s modes are first reset to the umask's (`file_modes`: safetensors writes weights owner-only)."""
    reset_modes_to_umask(source)
    if os.path.exists(target):
        trash = os.path.join(trash_root, f"replaced-{os.path.basename(target)}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)


class SignalFlag:
    """SIGTERM/SIGINT -> a flag (`received`, the signal number) that a training loop checks between steps.

    The handler only sets the flag and says what will happen (signal handlers must not do I/O in the middle of a
    step); the loop (or `SaveOnSignalCallback`, for Trainer) then saves a checkpoint and stops. A second signal restores
    the previous handler and re-raises it (Ctrl-C twice = stop now). Used by both training stages.
    """

    def __init__(
        self,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        message: str = "saving a checkpoint at the end of this step, then stopping (send it again to stop immediately)",
    ):
        self.signals = tuple(signals)
        self.message = message
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning(f"{type(self).__name__}: not in the main thread, signal handlers not installed.")
            return
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.received = signum
        logger.warning(f"Received {signal.Signals(signum).name}: {self.message}.")


class SaveOnSignalCallback(SignalFlag, TrainerCallback):
    """SIGTERM/SIGINT -> save a checkpoint at the end of the current optimizer step, then stop training cleanly.

    The handler (`SignalFlag`) only sets a flag; the callback turns it into
    `control.should_save` + `control.should_training_stop`, and Trainer then writes a regular, resumable checkpoint.
    Under several processes the flag is OR-ed across them every step, so all ranks save and stop together even if only
    one got the signal. A stop on the last step of an epoch waits for that epoch's scheduled evaluation and save, so
    the resumed run sees exactly the evaluations of an uninterrupted one. A second signal restores the previous handler
    and re-raises (Ctrl-C twice = stop now).
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
        super().__init__(signals)
        self._stop_at_epoch_end = False
        self._stopped_mid_epoch = False

    def _any_process_signalled(self, args: TrainingArguments) -> bool:
        flag = torch.tensor([1 if self.received is not None else 0], device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag.item()) and self.received is None:
            self.received = signal.SIGTERM  # another process was signalled
        return bool(flag.item())

    def on_train_begin(self, args, state, control, **kwargs):
        self.install()

    def on_step_end(self, args, state, control, **kwargs):
        if not self._any_process_signalled(args):
            return
        at_epoch_end = state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-9
        if at_epoch_end and not control.should_training_stop:
            self._stop_at_epoch_end = True  # let the epoch's own evaluation/save run first (see on_epoch_end)
            return
        control.should_save = True
        control.should_training_stop = True
        self._stopped_mid_epoch = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._stopped_mid_epoch:  # no epoch-end evaluation/save for a partial epoch
            control.should_evaluate = False
            control.should_save = False
        elif self._stop_at_epoch_end:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.uninstall()


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss: `step` (the optimizer step), `checkpoint` (the last one saved before it, or
    None) and `values` (the non-finite quantities and their values) are attributes; the message says what to do."""

    def __init__(
        self, message: str, *, step: int, checkpoint: str | None = None, values: Mapping[str, float] | None = None
    ):
        super().__init__(message)
        self.step, self.checkpoint, self.values = step, checkpoint, dict(values or {})


class NonFiniteLossCallback(TrainerCallback):
    """Stop training at the first optimizer step with a NaN/inf loss, and never checkpoint that step.

    Once the loss is NaN, the update of that step has already written NaN (or huge) values into the weights; Trainer
    would go on, replacing the *logged* loss by the mean of the previous ones (`logging_nan_inf_filter`), and save
    and even push the poisoned weights at the next checkpoint. This callback:

    * checks every optimizer step: `GPT1Trainer` feeds it each micro-batch's `loss`, `task_loss`, `lm_loss` and the
      step's gradient norm (`observe`); at `on_step_end` the check is OR-ed across processes (one scalar all-reduce),
      so all ranks stop at the same step;
    * also checks what is logged (`on_log`: loss / task_loss / lm_loss / grad_norm), for use with a plain `Trainer`;
    * then sets `should_training_stop` and clears `should_save` / `should_evaluate` for that step and the epoch end
      (it runs after Trainer's DefaultFlowCallback, so it overrides the scheduled save). The checkpoints already on
      disk - all from earlier, finite steps - stay as they are.

    After `trainer.train()` returns, `step` is the step that failed (None if none did), `values` the offending
    numbers, `checkpoint` the last checkpoint in `args.output_dir`, and `message` says all that in one line.
    """

    WATCHED = ("loss", "task_loss", "lm_loss", "grad_norm")

    def __init__(self):
        self.step: int | None = None
        self.values: dict[str, float] = {}
        self.checkpoint: str | None = None
        self._bad: torch.Tensor | None = None
        self._pending: dict[str, torch.Tensor] = {}

    # -- per-step observations (no host sync until the step ends) --------------------------------------------------

    def observe(self, name: str, value: Any) -> None:
        value = torch.as_tensor(value).detach().float()
        bad = ~torch.isfinite(value).all()
        value = value.reshape(-1)[0] if value.numel() else value.new_zeros(())
        previous = self._pending.get(name)
        if previous is not None:  # keep the first non-finite value of the step for the message
            value = torch.where(torch.isfinite(previous), value.to(previous.device), previous)
        self._pending[name] = value
        self._bad = bad if self._bad is None else (self._bad | bad.to(self._bad.device))

    def _step_is_bad(self, args: TrainingArguments) -> bool:
        flag = torch.zeros(1, device=args.device)
        if self._bad is not None:
            flag += self._bad.to(device=args.device, dtype=flag.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    # -- events ----------------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self.step, self.values, self.checkpoint = None, {}, None
        self._bad, self._pending = None, {}

    def on_step_end(self, args, state, control, **kwargs):
        bad, pending = self._step_is_bad(args), self._pending
        self._bad, self._pending = None, {}
        if bad and self.step is None:
            values = {name: float(value) for name, value in pending.items()}
            self._stop(args, state, control, {k: v for k, v in values.items() if not math.isfinite(v)} or values)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.step is not None or not logs:
            return
        values = {k: float(v) for k, v in logs.items() if k in self.WATCHED and isinstance(v, (int, float))}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            self._stop(args, state, control, bad)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.step is not None:
            control.should_save = False
            control.should_evaluate = False

    def _stop(self, args, state, control, values: Mapping[str, float]) -> None:
        self.step, self.values = state.global_step, dict(values)
        self.checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False
        logger.error(self.message)

    @property
    def message(self) -> str:
        if self.step is None:
            return "no non-finite loss"
        values = ", ".join(f"{name}={value}" for name, value in self.values.items())
        where = (
            f"the last good checkpoint is {self.checkpoint}" if self.checkpoint else "no checkpoint was saved before it"
        )
        return (
            f"non-finite training loss at step {self.step} ({values}); training stopped and the weights of that step "
            f"were not saved: {where}. Lower --learning-rate or check the data (or drop --fp16) and start again "
            f"(resuming restores that checkpoint's optimizer state and learning-rate schedule as they were)."
        )
