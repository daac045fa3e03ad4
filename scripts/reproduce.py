#!/usr/bin/env python
"""The paper's central claim at CPU scale: generative pre-training, then discriminative fine-tuning.

One command (the README's `make demo`) runs, on the shared data:

1. **Pretrain** a small GPT-1 (the GPT-1 BPE, the paper's post-LN architecture and schedule shape) on
   `corpus/` with `scripts/pretrain.py`, keeping a checkpoint every few hundred updates.
2. **Zero-shot** (paper §5, Figure 2 right): score SST-2, CoLA and Story Cloze with the LM alone at every
   checkpoint (and at random initialisation), so the curve shows what pre-training teaches by itself.
3. **Fine-tune** on SST-2, CoLA, MRPC and Story Cloze (the original release's 1,497/374 split of the
   validation stories) with `hf_gpt1.finetuning` (Trainer, the paper's recipe), in three variants with the
   same hyperparameters and seeds:
     (a) pretrained, λ = 0.5   (b) pretrained, λ = 0   (c) random initialisation, λ = 0.5
4. **Report**: `docs/RESULTS.md` (table task × variant, mean ± spread over seeds, command, hardware, wall
   time) and PNG plots (pretraining loss, zero-shot vs steps, ablation bars) in `docs/`.

Budgets (`--budget quick|full`) only change sizes (steps, examples, seeds), never the recipe, and every
variant gets exactly the same settings. Whatever comes out is reported as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Budget:
    """Sizes of one reproduction run. Hyperparameters not listed are the paper's (see finetuning.py)."""

    preset: str
    pretrain_steps: int
    pretrain_batch_size: int
    block_size: int
    save_every: int
    finetune_train_samples: dict[str, int]
    finetune_epochs: float
    finetune_batch_size: int
    finetune_max_length: int
    finetune_learning_rate: float
    seeds: tuple[int, ...]
    zero_shot_examples: int
    zero_shot_fit_examples: int = 1000


BUDGETS: dict[str, Budget] = {
    # Minutes, for the end-to-end test of this script: proves the plumbing, not the claim.
    "smoke": Budget(
        preset="gpt1-tiny",
        pretrain_steps=20,
        pretrain_batch_size=4,
        block_size=64,
        save_every=10,
        finetune_train_samples={"sst2": 48, "cola": 48, "mrpc": 32, "story_cloze": 32},
        finetune_epochs=1.0,
        finetune_batch_size=8,
        finetune_max_length=64,
        finetune_learning_rate=1e-4,
        seeds=(0,),
        zero_shot_examples=24,
        zero_shot_fit_examples=48,
    ),
    # Under 30 minutes on 2 CPU cores (27.6 min measured: pretraining 10.7, zero-shot 3.3, fine-tuning 13.5 for 24 runs).
    "quick": Budget(
        preset="gpt1-mini",
        pretrain_steps=600,
        pretrain_batch_size=16,
        block_size=128,
        save_every=100,
        finetune_train_samples={"sst2": 1000, "cola": 1000, "mrpc": 500, "story_cloze": 500},
        finetune_epochs=2.0,
        finetune_batch_size=16,
        finetune_max_length=96,
        finetune_learning_rate=1e-4,
        seeds=(0, 1),
        zero_shot_examples=300,
        zero_shot_fit_examples=600,
    ),
    # About an hour and a half on 2 CPU cores: a longer pretraining, all the training data the tasks have here.
    "full": Budget(
        preset="gpt1-mini",
        pretrain_steps=4000,
        pretrain_batch_size=16,
        block_size=128,
        save_every=500,
        finetune_train_samples={"sst2": 8000, "cola": 8551, "mrpc": 3668, "story_cloze": 1497},
        finetune_epochs=3.0,
        finetune_batch_size=16,
        finetune_max_length=128,
        finetune_learning_rate=1e-4,
        seeds=(0, 1, 2),
        zero_shot_examples=872,
    ),
}

TASKS = ("sst2", "cola", "mrpc", "story_cloze")
TASK_METRIC = {"sst2": "accuracy", "cola": "matthews_correlation", "mrpc": "f1", "story_cloze": "accuracy"}
VARIANTS = {
    "pretrained_lm0.5": ("pretrained", 0.5, "(a) pretrained, λ=0.5"),
    "pretrained_lm0": ("pretrained", 0.0, "(b) pretrained, λ=0"),
    "scratch_lm0.5": ("scratch", 0.5, "(c) random init, λ=0.5"),
}


@dataclass
class Paths:
    out: Path
    docs: Path
    data: Path

    @property
    def pretrain(self) -> Path:
        return self.out / "pretrain"

    @property
    def scratch(self) -> Path:
        return self.out / "scratch-init"

    @property
    def finetune(self) -> Path:
        return self.out / "finetune"


@dataclass
class Timings:
    started: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, since: float) -> None:
        self.stages[stage] = round(time.time() - since, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick", help="Sizes of the run (not the recipe).")
    parser.add_argument(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="The shared data folder (corpus/, glue/, rocstories/, gpt1-tokenizer/).",
    )
    parser.add_argument(
        "--output-dir",
        default=str(REPO_ROOT / "runs" / "reproduce"),
        help="Checkpoints and per-run outputs (large; not committed).",
    )
    parser.add_argument("--docs-dir", default=str(REPO_ROOT / "docs"), help="Where RESULTS.md and the plots go.")
    parser.add_argument("--corpus", default=None, help="Pretraining text (default: DATA_DIR/corpus, the novels).")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="Fine-tuning tasks.")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="Override the budget's fine-tuning seeds (recorded in RESULTS.md).",
    )
    parser.add_argument(
        "--skip-pretrain", action="store_true", help="Reuse the pretrained model already in OUTPUT_DIR/pretrain."
    )
    parser.add_argument("--overwrite", action="store_true", help="Start over: delete OUTPUT_DIR first.")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------------
# Stage 1: pretraining (a real `scripts/pretrain.py` run)
# ----------------------------------------------------------------------------------------------------------------------


def pretrain(paths: Paths, budget: Budget, corpus: Path) -> None:
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "pretrain.py"),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(paths.data / "gpt1-tokenizer"),
        "--model-config",
        budget.preset,
        "--block-size",
        str(budget.block_size),
        "--batch-size",
        str(budget.pretrain_batch_size),
        "--max-steps",
        str(budget.pretrain_steps),
        "--save-every",
        str(budget.save_every),
        "--eval-every",
        str(budget.save_every),
        "--eval-windows",
        "320",
        "--save-total-limit",
        "0",  # keep every checkpoint: the zero-shot curve reads them all
        "--mixed-precision",
        "bf16",
        "--seed",
        "0",
        "--output-dir",
        str(paths.pretrain),
    ]
    if (paths.pretrain / "checkpoint-1").exists() or any(paths.pretrain.glob("checkpoint-*")):
        command += ["--resume", "auto"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def pretraining_checkpoints(paths: Paths) -> list[tuple[int, Path]]:
    found = []
    for path in paths.pretrain.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "model.safetensors").exists():
            found.append((int(suffix), path))
    return sorted(found)


def load_checkpoint_model(paths: Paths, checkpoint: Path | None):
    """The LM at a pretraining checkpoint (accelerate's `model.safetensors`), or the final model if None."""
    import torch
    from safetensors.torch import load_file

    from hf_gpt1 import GPT1ForCausalLM, enable_cpu_speedups

    model = enable_cpu_speedups(GPT1ForCausalLM.from_pretrained(paths.pretrain))
    if checkpoint is not None:
        missing, unexpected = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"{checkpoint}: unexpected {unexpected}, missing {missing}")
        model.tie_weights()
    torch.set_grad_enabled(False)
    return model.eval()


def save_scratch_init(paths: Paths, seed: int = 0) -> None:
    """A randomly initialised model with exactly the pretrained model's config and tokenizer (variant c)."""
    import torch

    from hf_gpt1 import GPT1ForCausalLM, load_gpt1_tokenizer

    config = GPT1ForCausalLM.config_class.from_pretrained(paths.pretrain)
    torch.manual_seed(seed)
    model = GPT1ForCausalLM(config)
    model.save_pretrained(paths.scratch)
    load_gpt1_tokenizer(paths.pretrain).save_pretrained(paths.scratch)


# ----------------------------------------------------------------------------------------------------------------------
# Stage 2: zero-shot behaviour along pretraining
# ----------------------------------------------------------------------------------------------------------------------


def zero_shot_data(paths: Paths, budget: Budget) -> dict:
    import task_adapters as ta

    n = budget.zero_shot_examples
    sst2 = ta.load_task("sst2", paths.data / "glue")["validation"].select(range(min(n, 872)))
    cola = ta.load_task("cola", paths.data / "glue")
    cola_fit = cola["train"].shuffle(seed=0).select(range(budget.zero_shot_fit_examples))
    cola_eval = cola["validation"].select(range(min(n, len(cola["validation"]))))
    cloze = ta.load_task("story_cloze", paths.data / "rocstories", split_val=True)["validation"]
    return {"sst2": sst2, "cola_fit": cola_fit, "cola": cola_eval, "story_cloze": cloze}


def zero_shot_scores(model, tokenizer, data: dict) -> dict[str, float]:
    from hf_gpt1.zero_shot import cola_zero_shot, sst2_zero_shot, story_cloze_zero_shot

    sst2 = sst2_zero_shot(model, tokenizer, data["sst2"]["sentence"], data["sst2"]["label"])
    cola = cola_zero_shot(
        model,
        tokenizer,
        data["cola_fit"]["sentence"],
        data["cola_fit"]["label"],
        data["cola"]["sentence"],
        data["cola"]["label"],
    )
    cloze = data["story_cloze"]
    stories = [" ".join(row[f"input_sentence_{i}"] for i in range(1, 5)) for row in cloze]
    endings = [[row["sentence_quiz1"], row["sentence_quiz2"]] for row in cloze]
    labels = [row["answer_right_ending"] - 1 for row in cloze]
    story = story_cloze_zero_shot(model, tokenizer, stories, endings, labels)
    return {"sst2_accuracy": sst2["accuracy"], "cola_mcc": cola["mcc"], "story_cloze_accuracy": story["accuracy"]}


def zero_shot_curve(paths: Paths, budget: Budget) -> list[dict]:
    import torch

    from hf_gpt1 import GPT1ForCausalLM, enable_cpu_speedups, load_gpt1_tokenizer

    tokenizer = load_gpt1_tokenizer(paths.pretrain)
    data = zero_shot_data(paths, budget)
    curve = []
    scratch = enable_cpu_speedups(GPT1ForCausalLM.from_pretrained(paths.scratch)).eval()
    with torch.no_grad():
        curve.append({"step": 0, **zero_shot_scores(scratch, tokenizer, data)})
        for step, checkpoint in pretraining_checkpoints(paths):
            scores = zero_shot_scores(load_checkpoint_model(paths, checkpoint), tokenizer, data)
            curve.append({"step": step, **scores})
            print(f"zero-shot @ step {step}: {scores}", flush=True)
    return curve


# ----------------------------------------------------------------------------------------------------------------------
# Stage 3: fine-tuning ablation (in-process runs of the real fine-tuning entry point)
# ----------------------------------------------------------------------------------------------------------------------


def finetune_args(
    task: str, model_dir: Path, out: Path, lm_coef: float, seed: int, paths: Paths, budget: Budget
) -> list[str]:
    data_dir = paths.data / ("rocstories" if task == "story_cloze" else "glue")
    args = [
        "--task",
        task,
        "--model",
        str(model_dir),
        "--output-dir",
        str(out),
        "--data-dir",
        str(data_dir),
        "--lm-coef",
        str(lm_coef),
        "--seed",
        str(seed),
        "--max-train-samples",
        str(budget.finetune_train_samples[task]),
        "--epochs",
        str(budget.finetune_epochs),
        "--batch-size",
        str(budget.finetune_batch_size),
        "--learning-rate",
        str(budget.finetune_learning_rate),
        "--max-length",
        str(budget.finetune_max_length),
        "--bf16",
        "--disable-tqdm",
        "--overwrite-output-dir",
        "--save-total-limit",
        "1",
    ]
    import torch

    if not torch.cuda.is_available():
        args += ["--use-cpu"]
    if task == "story_cloze":
        args += ["--split-validation"]  # the original release's 1,497 / 374 split of the validation stories
    return args


def finetune_all(paths: Paths, budget: Budget, tasks: list[str]) -> list[dict]:
    from hf_gpt1 import finetuning

    rows = []
    for task in tasks:
        for variant, (init, lm_coef, _) in VARIANTS.items():
            for seed in budget.seeds:
                out = paths.finetune / task / f"{variant}-seed{seed}"
                results_file = out / "eval_results.json"
                if not results_file.exists():
                    model_dir = paths.pretrain if init == "pretrained" else paths.scratch
                    started = time.time()
                    code = finetuning.main(finetune_args(task, model_dir, out, lm_coef, seed, paths, budget))
                    if code:
                        raise RuntimeError(f"fine-tuning {task}/{variant}/seed {seed} failed with exit code {code}")
                    print(f"{task} {variant} seed {seed}: {time.time() - started:.0f}s", flush=True)
                results = json.loads(results_file.read_text())
                rows.append({"task": task, "variant": variant, "seed": seed, "score": pick_metric(results, task)})
                # keep only the results; the per-run checkpoints would fill the disk
                for item in out.iterdir():
                    if item.is_dir():
                        shutil.rmtree(item, ignore_errors=True)
                    elif item.suffix in (".safetensors", ".bin"):
                        item.unlink()
    return rows


def pick_metric(results: dict, task: str) -> float:
    wanted = TASK_METRIC[task]
    metrics = results.get("metrics", results)
    for key, value in metrics.items():
        if key.endswith(wanted) and isinstance(value, (int, float)):
            return float(value)
    raise KeyError(f"{task}: no '{wanted}' in eval_results.json keys {sorted(metrics)}")


# ----------------------------------------------------------------------------------------------------------------------
# Stage 4: report
# ----------------------------------------------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        table[task] = {}
        for variant in VARIANTS:
            scores = [r["score"] for r in rows if r["task"] == task and r["variant"] == variant]
            if scores:
                spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
                table[task][variant] = (statistics.mean(scores), spread, len(scores))
    return table


def plot_all(paths: Paths, curve: list[dict], table: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths.docs.mkdir(parents=True, exist_ok=True)
    files = {}
    loss_png = paths.pretrain / "loss_curve.png"
    if loss_png.exists():
        shutil.copy(loss_png, paths.docs / "pretraining_loss.png")
        files["pretraining"] = "pretraining_loss.png"

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [p["step"] for p in curve]
    for key, label in (
        ("sst2_accuracy", "SST-2 acc"),
        ("story_cloze_accuracy", "Story Cloze acc"),
        ("cola_mcc", "CoLA MCC"),
    ):
        ax.plot(steps, [p[key] for p in curve], marker="o", label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="pretraining updates", ylabel="zero-shot score", title="Zero-shot behaviour during pre-training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths.docs / "zero_shot.png", dpi=120)
    plt.close(fig)
    files["zero_shot"] = "zero_shot.png"

    fig, ax = plt.subplots(figsize=(7, 4))
    tasks = list(table)
    width = 0.25
    for i, (variant, (_, _, label)) in enumerate(VARIANTS.items()):
        means = [table[t].get(variant, (float("nan"), 0, 0))[0] for t in tasks]
        spreads = [table[t].get(variant, (0, 0.0, 0))[1] for t in tasks]
        ax.bar([x + (i - 1) * width for x in range(len(tasks))], means, width, yerr=spreads, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({TASK_METRIC[t]})" for t in tasks])
    ax.set(ylabel="dev score", title="Fine-tuning ablation (same recipe, budget and seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths.docs / "ablation.png", dpi=120)
    plt.close(fig)
    files["ablation"] = "ablation.png"
    return files


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def write_results(
    paths: Paths, args: argparse.Namespace, budget: Budget, curve, rows, table, files, timings: Timings
) -> Path:
    lines = [
        "# Reproduction: pre-training → fine-tuning beats training from scratch?",
        "",
        "Generated by `scripts/reproduce.py`; every number below comes from that run (nothing edited by hand).",
        "",
        f"- Command: `python scripts/reproduce.py {' '.join(sys.argv[1:]) or '--budget quick'}` "
        f"(`make demo` runs `--budget quick`)",
        f"- Hardware: {hardware()}",
        f"- Wall time: {timings.stages.get('total', 0) / 60:.1f} min in all "
        + "("
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.stages.items() if k != "total")
        + ")",
        f"- Budget `{args.budget}`: `{json.dumps(asdict(budget))}`",
        "",
        "## Fine-tuning ablation (dev scores, mean ± std over seeds)",
        "",
        "| task (metric) | " + " | ".join(label for _, _, label in VARIANTS.values()) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    for task, by_variant in table.items():
        cells = []
        for variant in VARIANTS:
            if variant in by_variant:
                mean, spread, n = by_variant[variant]
                cells.append(f"{100 * mean:.1f} ± {100 * spread:.1f} (n={n})")
            else:
                cells.append("–")
        lines.append(f"| {task} ({TASK_METRIC[task]}) | " + " | ".join(cells) + " |")
    averages = []
    for variant in VARIANTS:
        values = [table[t][variant][0] for t in table if variant in table[t]]
        averages.append(f"{100 * statistics.mean(values):.1f}" if values else "–")
    lines += ["| **average** | " + " | ".join(averages) + " |", ""]
    lines += [
        "Scores ×100. Every variant uses the same fine-tuning hyperparameters, data, budget and seeds; "
        "(c) starts from a random model with the pretrained model's exact configuration and tokenizer.",
        "",
        "## Zero-shot behaviour along pre-training (paper §5)",
        "",
        "| updates | SST-2 acc | CoLA MCC | Story Cloze acc |",
        "|---|---|---|---|",
    ]
    for point in curve:
        lines.append(
            f"| {point['step']} | {100 * point['sst2_accuracy']:.1f} | {100 * point['cola_mcc']:.1f} | "
            f"{100 * point['story_cloze_accuracy']:.1f} |"
        )
    lines += [""]
    for key, title in (
        ("pretraining", "Pre-training loss"),
        ("zero_shot", "Zero-shot scores"),
        ("ablation", "Ablation"),
    ):
        if key in files:
            lines += [f"![{title}]({files[key]})", ""]
    lines += ["## Per-run scores", "", "| task | variant | seed | score |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['variant']} | {r['seed']} | {100 * r['score']:.2f} |" for r in rows]
    path = paths.docs / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (paths.docs / "results.json").write_text(
        json.dumps({"budget": asdict(budget), "curve": curve, "runs": rows, "timings": timings.stages}, indent=2),
        encoding="utf-8",
    )
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = BUDGETS[args.budget]
    if args.seeds:
        budget = replace(budget, seeds=tuple(args.seeds))
    paths = Paths(
        out=Path(args.output_dir).resolve(), docs=Path(args.docs_dir).resolve(), data=Path(args.data_dir).resolve()
    )
    for needed in ("corpus", "glue", "rocstories", "gpt1-tokenizer"):
        if not (paths.data / needed).is_dir():
            raise SystemExit(f"error: {paths.data / needed} not found; --data-dir must be the shared data folder.")
    if args.overwrite and paths.out.exists():
        shutil.rmtree(paths.out)
    paths.out.mkdir(parents=True, exist_ok=True)
    timings = Timings()

    started = time.time()
    if not args.skip_pretrain:
        pretrain(paths, budget, Path(args.corpus) if args.corpus else paths.data / "corpus")
    timings.mark("pretraining", started)
    if not paths.scratch.exists():
        save_scratch_init(paths)

    started = time.time()
    curve = zero_shot_curve(paths, budget)
    timings.mark("zero-shot", started)

    started = time.time()
    rows = finetune_all(paths, budget, args.tasks)
    timings.mark("fine-tuning", started)
    timings.stages["total"] = round(time.time() - timings.started, 1)

    table = summarise(rows)
    files = plot_all(paths, curve, table)
    results = write_results(paths, args, budget, curve, rows, table, files, timings)
    print(results.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
