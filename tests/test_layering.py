"""The layering contract (docs/ARCHITECTURE.md), read from the source's import statements (module level and inside
functions alike): each module of `hf_gpt1` imports only from its own layer or the layers below, and no two modules
import each other, directly or around a cycle.

    0  configuration_gpt1, tokenization_gpt1, bpe_training                     config and tokenizer
    1  modeling_gpt1 and the siblings it ships with: conversion_gpt1,          the network (ships as remote code)
       input_checks_gpt1, modeling_outputs_gpt1
    2  cpu_speed, kernels, peft_integration, convert_openai_checkpoint,        applied to a finished model
       model_cards
    3  training_args, training_callbacks, trainer, training_curves,             training, evaluation, publishing,
       pretraining(_corpus, _output, _run), finetuning, zero_shot,             benchmarking
       reproduction, hub, benchmarks; task_adapters
    scripts/                                                                   entry points: may import anything

One exception, named in KNOWN_EXCEPTIONS with its reason: the model's `push_to_hub` optionally imports `hf_gpt1.hub`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from testing_utils import REPO_ROOT

LAYERS = {
    "hf_gpt1.configuration_gpt1": 0,
    "hf_gpt1.tokenization_gpt1": 0,
    "hf_gpt1.bpe_training": 0,
    "hf_gpt1.file_modes": 0,
    "hf_gpt1.modeling_gpt1": 1,
    "hf_gpt1.conversion_gpt1": 1,
    "hf_gpt1.input_checks_gpt1": 1,
    "hf_gpt1.modeling_outputs_gpt1": 1,
    "hf_gpt1.cpu_speed": 2,
    "hf_gpt1.kernels": 2,
    "hf_gpt1.peft_integration": 2,
    "hf_gpt1.convert_openai_checkpoint": 2,
    "hf_gpt1.model_cards": 2,
    "hf_gpt1.training_args": 3,
    "hf_gpt1.training_callbacks": 3,
    "hf_gpt1.pretraining": 3,
    "hf_gpt1.pretraining_corpus": 3,
    "hf_gpt1.pretraining_output": 3,
    "hf_gpt1.pretraining_run": 3,
    "hf_gpt1.trainer": 3,
    "hf_gpt1.training_curves": 3,
    "hf_gpt1.finetuning": 3,
    "hf_gpt1.zero_shot": 3,
    "hf_gpt1.reproduction": 3,
    "hf_gpt1.hub": 3,
    "hf_gpt1.benchmarks": 3,
    "task_adapters": 3,
}
# (importer, imported): why. transformers' push_to_hub writes README.md after save_pretrained and has no hook for a
# model's own card, so GPT1PreTrainedModel.push_to_hub uploads hf-gpt1's card afterwards; the import is optional
# (remote code without the package keeps transformers' generic card).
KNOWN_EXCEPTIONS = {("hf_gpt1.modeling_gpt1", "hf_gpt1.hub")}
# What save_pretrained copies next to the weights with modeling_gpt1.py (its relative imports).
REMOTE_CODE_SIBLINGS = {
    "hf_gpt1.configuration_gpt1",
    "hf_gpt1.conversion_gpt1",
    "hf_gpt1.input_checks_gpt1",
    "hf_gpt1.modeling_outputs_gpt1",
}
PACKAGES = ("hf_gpt1", "task_adapters")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: `hf_gpt1.cpu_speed.attention` -> `hf_gpt1.cpu_speed`."""
    if module.startswith("task_adapters"):
        return "task_adapters"
    return ".".join(module.split(".")[:2])


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (package __init__ files excluded: they only re-export)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path.relative_to(REPO_ROOT).parts[-1] == "__init__.py" and len(path.relative_to(REPO_ROOT).parts) == 2:
                continue
            source = unit(module_name(path))
            targets = {unit(t) for t in imports_of(path)} - {source, "hf_gpt1"}
            graph.setdefault(source, set()).update(targets)
    return graph


def test_every_module_has_a_layer():
    units = set(import_graph())
    assert units <= set(LAYERS), f"give these a layer in LAYERS and docs/ARCHITECTURE.md: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("source", sorted(LAYERS))
def test_imports_go_down_the_layers(source):
    graph = import_graph()
    upward = sorted(
        target
        for target in graph.get(source, ())
        if LAYERS.get(target, 99) > LAYERS[source] and (source, target) not in KNOWN_EXCEPTIONS
    )
    assert upward == [], f"{source} (layer {LAYERS[source]}) imports higher layers: {upward}"


def test_the_model_file_imports_only_what_ships_with_it():
    """modeling_gpt1 is saved next to checkpoints as remote code: only relative imports of its sibling files."""
    path = REPO_ROOT / "hf_gpt1" / "modeling_gpt1.py"
    imported = {unit(t) for t in imports_of(path)} - {t for s, t in KNOWN_EXCEPTIONS if s == "hf_gpt1.modeling_gpt1"}
    assert imported <= REMOTE_CODE_SIBLINGS


def test_the_remote_code_siblings_import_only_torch_and_transformers_and_each_other():
    for sibling in REMOTE_CODE_SIBLINGS:
        path = REPO_ROOT / "hf_gpt1" / (sibling.split(".")[-1] + ".py")
        assert {unit(t) for t in imports_of(path)} <= REMOTE_CODE_SIBLINGS, sibling


def test_task_adapters_import_only_the_bottom_layer():
    """The data side needs the tokenizer's text standardization, nothing of the model or of training."""
    above = sorted(t for t in import_graph().get("task_adapters", ()) if LAYERS.get(t, 99) > 0)  # only config/tokenizer
    assert above == []


def test_no_import_cycles():
    graph = import_graph()
    cycles = []

    def visit(node, stack):
        for target in sorted(graph.get(node, ())):
            if target in stack:
                cycles.append(stack[stack.index(target) :] + [target])
            else:
                visit(target, stack + [target])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == [], f"import cycles: {cycles[:5]}"
