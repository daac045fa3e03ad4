"""The task registry: name → :class:`TaskSpec`, and name → the family's adapter.

One dictionary, filled by ``task_adapters.tasks`` at import time and by users through
:func:`register_task`. Everything else (``load_task``, ``get_adapter``) looks tasks up here, so a
registered task gets loading, encoding, collation and metrics without further code.
"""

from __future__ import annotations

import threading

from .encoding import TaskAdapter, adapter_for_spec
from .specs import TaskFamily, TaskSpec

__all__ = ["UnknownTaskError", "get_adapter", "get_task_spec", "list_tasks", "register_task", "unregister_task"]

_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}
_LOCK = threading.Lock()


class UnknownTaskError(LookupError):
    """Raised for a task name that is not registered; the message lists the known names."""


def _key(name: str) -> str:
    return name.strip().lower()


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry and return it.

    Registering a name (or alias) that is already taken raises unless ``overwrite=True`` — silently
    replacing e.g. ``sst2`` would change what every caller of ``load_task("sst2")`` gets.
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task expects a TaskSpec, got {type(spec).__name__}")
    names = [_key(spec.name), *(_key(a) for a in spec.aliases)]
    with _LOCK:
        for n in names:
            owner = _ALIASES.get(n)
            if owner is None:
                continue
            if not overwrite:
                raise ValueError(
                    f"task name {n!r} is already registered (by {owner!r}); pass overwrite=True to replace it"
                )
            if owner != spec.name:  # overwrite replaces a task, it never steals another task's name
                raise ValueError(f"name {n!r} belongs to task {owner!r}; unregister that task first")
        _remove_locked(_key(spec.name))
        _TASKS[spec.name] = spec
        for n in names:
            _ALIASES[n] = spec.name
    return spec


def _remove_locked(key: str) -> TaskSpec | None:
    canonical = _ALIASES.get(key)
    if canonical is None:
        return None
    spec = _TASKS.pop(canonical)
    for alias in [a for a, owner in _ALIASES.items() if owner == canonical]:
        del _ALIASES[alias]
    return spec


def unregister_task(name: str) -> TaskSpec:
    """Remove a task (and its aliases) from the registry; returns its spec."""
    with _LOCK:
        spec = _remove_locked(_key(name))
    if spec is None:
        raise UnknownTaskError(_unknown_message(name))
    return spec


def _unknown_message(name: str) -> str:
    return f"unknown task {name!r}. Known tasks: {', '.join(list_tasks())}. Add one with task_adapters.register_task(TaskSpec(...))."


def get_task_spec(name: str | TaskSpec) -> TaskSpec:
    """Look up a task by name or alias (case-insensitive). A ``TaskSpec`` is returned unchanged."""
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__}")
    canonical = _ALIASES.get(_key(name))
    if canonical is None:
        raise UnknownTaskError(_unknown_message(name))
    return _TASKS[canonical]


def list_tasks(family: TaskFamily | str | None = None) -> list[str]:
    """Canonical names of the registered tasks (sorted), optionally only those of one family."""
    fam = TaskFamily(family) if family is not None else None
    return sorted(n for n, s in _TASKS.items() if fam is None or s.family is fam)


def get_adapter(name: str | TaskSpec) -> TaskAdapter:
    """The adapter for a task: encodes its data, and computes its metrics.

    The adapter class is chosen by the task's family, so every registered task gets one.
    """
    return adapter_for_spec(get_task_spec(name))
