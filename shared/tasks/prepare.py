"""Turn a TaskSpec into train/validation/test JSONL in the git-ignored cache, and load it back.

`cache_dir()/tasks/<name>/{train,validation,test}.jsonl` + `meta.json` (written last, so its
presence with the spec's fingerprint means the pack is complete). BIG-bench's canary asks that its
data never enter training corpora: the derived files live only in the cache, never in the repo.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from shared.atomic import atomic_write_text
from shared.cache import cache_dir
from shared.data_formats import (
    MCExample,
    TrainExample,
    load_mc_jsonl,
    load_training_jsonl,
    write_mc_jsonl,
    write_training_jsonl,
)
from shared.scoring import continuation_pair
from shared.tasks.sources import Grouped, read_bbc_news, read_bigbench, read_text_windows
from shared.tasks.spec import TASKS, BBCNewsSource, BigBenchSource, SplitSpec, TaskSpec

SPLITS = ("train", "validation", "test")
META_NAME = "meta.json"

E = TypeVar("E", MCExample, TrainExample)


class UnknownTaskError(KeyError, ValueError):
    """A task name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class TaskData(Generic[E]):
    spec: TaskSpec
    train: list[E]
    validation: list[E]
    test: list[E]


def get_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; available tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_dir(name: str) -> Path:
    return cache_dir() / "tasks" / name


def _read(spec: TaskSpec) -> Grouped:
    source = spec.source
    if isinstance(source, BigBenchSource):
        members = tuple(s.source.member for s in TASKS.values() if isinstance(s.source, BigBenchSource))
        return read_bigbench(source, (*members, source.member))
    if isinstance(source, BBCNewsSource):
        return read_bbc_news(source)
    return read_text_windows(source)


def split_groups(grouped: Grouped, split: SplitSpec) -> dict[str, list[Any]]:
    """Shuffle the groups with the fixed seed; fill test, then validation, up to their sizes; rest is train.

    Exact duplicates are dropped; a group never straddles two splits, so a split may exceed its
    target by at most one group.
    """
    groups: dict[str, list[Any]] = {}
    seen: set[str] = set()
    for key, example in grouped:
        fingerprint = repr(example)
        if fingerprint not in seen:
            seen.add(fingerprint)
            groups.setdefault(key, []).append(example)
    order = list(groups)
    random.Random(split.seed).shuffle(order)
    total = len(seen)
    targets = {
        "test": min(split.max_test, round(split.test_fraction * total)),
        "validation": min(split.max_validation, round(split.validation_fraction * total)),
    }
    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for key in order:
        name = next((n for n in ("test", "validation") if len(out[n]) < targets[n]), "train")
        out[name].extend(groups[key])
    if split.max_train is not None:
        out["train"] = out["train"][: split.max_train]
    return out


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(meta, indent=2))


def _is_prepared(spec: TaskSpec, directory: Path) -> bool:
    meta = directory / META_NAME
    if not meta.is_file() or not all((directory / f"{s}.jsonl").is_file() for s in SPLITS):
        return False
    try:
        return bool(json.loads(meta.read_text())["fingerprint"] == spec.fingerprint())
    except (ValueError, KeyError):
        return False


def prepare_task(name: str, force: bool = False) -> Path:
    """The task's directory of train/validation/test JSONL, built from the raw package if needed."""
    spec = get_spec(name)
    directory = task_dir(name)
    if not force and _is_prepared(spec, directory):
        return directory
    splits = split_groups(_read(spec), spec.split)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_NAME).unlink(missing_ok=True)  # incomplete until the new meta is written
    for split_name, examples in splits.items():
        path = directory / f"{split_name}.jsonl"
        if spec.kind == "multiple_choice":
            write_mc_jsonl(path, examples)
        else:
            write_training_jsonl(path, examples)
    meta = {
        "fingerprint": spec.fingerprint(),
        "sizes": {k: len(v) for k, v in splits.items()},
        "spec": spec.model_dump(mode="json"),
    }
    _write_meta(directory / META_NAME, meta)
    return directory


def load_task(name: str) -> TaskData[MCExample] | TaskData[TrainExample]:
    """Prepare if needed, then load: MCExample lists for multiple choice, TrainExample for perplexity."""
    spec = get_spec(name)
    return load_mc_task(name) if spec.kind == "multiple_choice" else load_lm_task(name)


def load_mc_task(name: str) -> TaskData[MCExample]:
    return _load_splits(name, "multiple_choice", "multiple choice", load_mc_jsonl)


def load_lm_task(name: str) -> TaskData[TrainExample]:
    return _load_splits(name, "perplexity", "language modelling", load_training_jsonl)


def _load_splits(name: str, kind: str, described: str, load: Callable[[Path], list[E]]) -> TaskData[E]:
    """The task's prepared splits read with the reader of its kind; a task of another kind is refused, since
    its files hold the other format."""
    spec = get_spec(name)
    if spec.kind != kind:
        raise ValueError(f"task {name!r} is a {spec.kind} task, not {described}")
    directory = prepare_task(name)
    splits = {s: load(directory / f"{s}.jsonl") for s in SPLITS}
    return TaskData(spec=spec, **splits)


def as_training_examples(examples: list[MCExample]) -> list[TrainExample]:
    """Multiple-choice rows as training rows: the gold continuation, split exactly as the scorer splits it."""
    return [TrainExample(*continuation_pair(e.context, e.choices[e.label])) for e in examples]
