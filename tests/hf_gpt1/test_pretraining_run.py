"""hf_gpt1.pretraining_run in-process: what the pretraining stage asks of `transformers.Trainer` (its optimiser and
schedule, the epoch-seeded window order reaching Trainer's data loader, the validation/checkpoint schedule, the files
a checkpoint carries). Real Trainer, real tiny GPT-1; the end-to-end runs are in tests/scripts/test_pretrain.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hf_gpt1 import GPT1Config, GPT1ForCausalLM, pretraining_corpus, pretraining_output
from hf_gpt1.pretraining_run import GPT1PretrainingTrainer, PretrainingScheduleCallback
from hf_gpt1.training_args import GPT1PretrainingArguments

BLOCK = 8


def _model(**config) -> GPT1ForCausalLM:
    torch.manual_seed(0)
    return GPT1ForCausalLM(GPT1Config(vocab_size=64, n_positions=BLOCK, n_embd=16, n_layer=2, n_head=2, **config))


def _windows(count: int) -> pretraining_corpus.PackedWindows:
    """Window i holds the token i everywhere, so a batch says which windows it was made of."""
    tokens = np.repeat(np.arange(count, dtype=np.int64), BLOCK)
    return pretraining_corpus.PackedWindows(tokens, BLOCK, 0, count)


def _args(tmp_path, **overrides) -> GPT1PretrainingArguments:
    values = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        learning_rate=2.5e-4,
        warmup_steps=10,
        max_steps=110,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        prediction_loss_only=True,
        seed=3,
    )
    values.update(overrides)
    return GPT1PretrainingArguments(**values)


class _RecordingTrainer(GPT1PretrainingTrainer):
    """Records the windows of every training micro-batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append(inputs["input_ids"][:, 0].tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _trainer(tmp_path, args, train, eval_dataset=None, callbacks=(), cls=GPT1PretrainingTrainer, model=None):
    return cls(
        model=model if model is not None else _model(),
        args=args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        callbacks=list(callbacks),
        sampler=pretraining_corpus.EpochShuffleSampler(
            len(train), args.seed, multiple_of=args.per_device_train_batch_size
        ),
        log_path=tmp_path / "log.jsonl",
        checkpoint_state=lambda: {"identity": {"seed": args.seed}},
    )


def test_optimiser_and_schedule_are_the_papers(tmp_path):
    """AdamW (betas 0.9/0.999, eps 1e-8) with decay 0.01 on every weight but biases and LayerNorm gains (the paper's
    "all non bias or gain weights", embeddings included), linear warmup then cosine annealing to 0."""
    trainer = _trainer(tmp_path, _args(tmp_path), _windows(8))
    trainer.create_optimizer_and_scheduler(num_training_steps=110)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    assert decayed == {n for n in names.values() if n.endswith(".weight") and ".ln_" not in n}
    assert {"transformer.tokens_embed.weight", "transformer.positions_embed.weight"} <= decayed
    lrs = []
    for _ in range(110):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.25e-4) and lrs[10] == pytest.approx(2.5e-4)
    assert lrs[60] == pytest.approx(1.25e-4)  # half way through the cosine
    assert lrs[-1] < 1e-6 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_trainer_reads_windows_in_the_samplers_order_per_epoch(tmp_path):
    """Trainer's data loader draws every epoch from `EpochShuffleSampler` with Trainer's epoch number (accelerate
    forwards `set_epoch`), so the order is `seed + epoch`'s permutation, a new one each epoch."""
    train = _windows(10)
    args = _args(tmp_path, max_steps=15, warmup_steps=0, logging_steps=100)  # 3 epochs of 5 batches
    trainer = _trainer(tmp_path, args, train, cls=_RecordingTrainer)
    trainer.train()
    assert len(trainer.seen) == 15
    for epoch in range(3):
        expected = list(pretraining_corpus.EpochShuffleSampler(10, args.seed + epoch))
        assert sum(trainer.seen[5 * epoch : 5 * epoch + 5], []) == expected, epoch
    assert trainer.seen[:5] != trainer.seen[5:10]


def test_schedule_validates_and_saves_every_n_updates_and_at_the_last(tmp_path):
    train, val = _windows(13), _windows(5)  # 6 full batches of 2 per epoch; all 5 validation windows count
    args = _args(tmp_path, max_steps=7, warmup_steps=0, logging_steps=3, save_total_limit=0)
    schedule = PretrainingScheduleCallback(eval_every=3, save_every=4, has_validation=True)
    trainer = _trainer(tmp_path, args, train, eval_dataset=val, callbacks=[schedule])
    trainer.train()
    out = tmp_path / "run"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-7"]
    state = json.loads((out / "checkpoint-7" / pretraining_output.STATE_FILE).read_text())
    assert state["step"] == 7 and state["tokens_seen"] == 7 * 2 * BLOCK and state["identity"] == {"seed": 3}
    assert (out / "checkpoint-7" / "trainer_state.json").is_file()
    records = pretraining_output.read_jsonl(tmp_path / "log.jsonl")
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6, 7]
    assert [r["step"] for r in records if "train_loss" in r] == [3, 6, 7]
    last_val = [r for r in records if "val_loss" in r][-1]
    assert last_val["val_perplexity"] == pytest.approx(math.exp(last_val["val_loss"]))
    assert state["val_loss"] == last_val["val_loss"]
    # the last validation is the final model's mean loss over all 5 windows (none dropped to fill a batch)
    windows = torch.stack([val[i]["input_ids"] for i in range(len(val))])
    model = trainer.model.eval()
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss for w in windows]
    assert last_val["val_loss"] == pytest.approx(torch.stack(losses).mean().item(), abs=1e-6)
    assert [r["tokens_seen"] for r in records if "train_loss" in r] == [s * 2 * BLOCK for s in (3, 6, 7)]


NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def test_a_checkpoint_of_the_old_accelerate_loop_resumes_under_trainer(tmp_path):
    """0.1 pretrained with its own Accelerate loop and `accelerator.save_state` checkpoints. Such a checkpoint is
    upgraded in place (`upgrade_checkpoint`) and Trainer continues it: the remaining updates use the saved optimizer
    moments, schedule position and data position, so the weights match the old loop carried on without a break."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from transformers import get_cosine_schedule_with_warmup

    train, seed, lr = _windows(16), 3, 1e-2
    order = list(pretraining_corpus.EpochShuffleSampler(16, seed, multiple_of=2))

    def old_loop(steps: int, save_at: int | None = None):
        """0.1's loop: AdamW (fused) on the decay groups, warmup + cosine stepped once per update, clipping at 1."""
        accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
        model = _model(**NO_DROPOUT)
        names = dict(model.named_parameters())
        decay = [p for n, p in names.items() if n.endswith(".weight") and ".ln_" not in n]
        rest = [p for n, p in names.items() if not (n.endswith(".weight") and ".ln_" not in n)]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
        scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=4)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        for step in range(1, steps + 1):
            ids = torch.stack([train[i]["input_ids"] for i in order[2 * step - 2 : 2 * step]])
            accelerator.backward(model(input_ids=ids, labels=ids).loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step == save_at:
                checkpoint = tmp_path / "run" / f"checkpoint-{step}"
                accelerator.save_state(str(checkpoint))
                (checkpoint / pretraining_output.STATE_FILE).write_text(
                    json.dumps({"step": step, "epoch": 0}), encoding="utf-8"
                )
        weights = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        return weights

    reference = old_loop(4)
    old_loop(2, save_at=2)
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert pretraining_output.is_accelerate_checkpoint(checkpoint)

    model = _model(**NO_DROPOUT)
    pretraining_output.upgrade_checkpoint(
        checkpoint, model, world_size=1, max_steps=4, batch_size=2, gradient_accumulation_steps=1, logging_steps=1
    )
    assert not pretraining_output.is_accelerate_checkpoint(checkpoint)
    names = {p.name for p in checkpoint.iterdir()}
    assert {"trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names
    assert not names & {"optimizer.bin", "scheduler.bin", "random_states_0.pkl"}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2

    args = _args(tmp_path, max_steps=4, warmup_steps=1, learning_rate=lr, logging_steps=1, seed=seed)
    trainer = _trainer(tmp_path, args, train, model=_model(**NO_DROPOUT))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 4
    resumed = trainer.model.state_dict()
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    lrs = [r["learning_rate"] for r in pretraining_output.read_jsonl(tmp_path / "log.jsonl")]
    assert lrs == pytest.approx([lr * 0.5 * (1 + math.cos(math.pi * s / 3)) for s in (1, 2)])  # updates 3, 4
