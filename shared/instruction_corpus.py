"""Public instruction-like text for stage 1: BIG-bench multiple-choice prompts with their answers.

The calibration corpus (Wikipedia, news) never shows the model a prompt that asks a question, lists
choices and expects one of them. Distilled on prose alone, an emulator answers such prompts with a
prior of its own, and an adapter tuned through it learns to correct that prior instead of the full
model's (docs/method-notes.md, "Why intent_recognition did not transfer"). So stage 1 also reads
prompts of this shape, from BIG-bench tasks the project never evaluates: every task behind a built-in
task pack is left out, and a data owner's own data never enters stage 1.

BIG-bench's canary asks that its data never enter published training corpora: the text is read from
the cached sdist into memory at run time and never written anywhere.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache

from shared.corpora import calibration_split
from shared.tasks.sources import bigbench_examples, bigbench_task_files
from shared.tasks.spec import TASKS, BigBenchSource

MAX_MEMBER_BYTES = 1_000_000  # the larger task.json files are images as text, games, generated puzzles
PER_TASK = 25  # examples per task: ~300 tasks, about as many characters as the calibration corpus
MAX_CHARS = 1500  # one prompt with its answer; longer ones are few and would fill whole windows
SAMPLE_SEED = 0  # which prompts of each task
STREAM_SEED = 1  # the order of documents and prompts in the stage-1 text


def evaluated_tasks() -> frozenset[str]:
    """Top-level BIG-bench task folders behind the built-in task packs (never stage-1 text)."""
    return frozenset(spec.source.member.split("/")[0] for spec in TASKS.values()
                     if isinstance(spec.source, BigBenchSource))


@lru_cache(maxsize=1)
def instruction_texts() -> tuple[str, ...]:
    """Seeded sample of `PER_TASK` prompts per BIG-bench multiple-choice task, each followed by its
    correct choice, in a stable order (one pass over the sdist, about 10 s)."""
    excluded = evaluated_tasks()
    rng = random.Random(SAMPLE_SEED)
    out: list[str] = []
    found = bigbench_task_files(lambda path, size: path.endswith("/task.json") and size <= MAX_MEMBER_BYTES
                                and path.split("/")[0] not in excluded)
    for member in sorted(found):
        try:
            task = json.loads(found[member])
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        texts = [f"{ex.context} {ex.choices[ex.label]}" for _, ex in bigbench_examples(task, {})]
        texts = [t for t in texts if len(t) <= MAX_CHARS]
        rng.shuffle(texts)
        out.extend(texts[:PER_TASK])
    return tuple(out)


STAGE1_CORPORA = ("calibration", "calibration+instructions")


def check_corpus(corpus: str, name: str = "stage-1 corpus") -> str:
    """`corpus` if it names a stage-1 text, else a ValueError naming `name` (a CLI passes its option)."""
    if corpus not in STAGE1_CORPORA:
        raise ValueError(f"{name} must be one of {', '.join(STAGE1_CORPORA)}, got {corpus!r}")
    return corpus


def stage1_texts(corpus: str) -> list[str] | None:
    """Stage 1's training text by name: None for the built-in calibration corpus (its profile ids stay),
    else the calibration documents and the instruction prompts in one seeded shuffle (the RL step's
    held-out tail of the stream then holds both kinds)."""
    if check_corpus(corpus) == "calibration":
        return None
    texts = [*calibration_split()[0], *instruction_texts()]
    random.Random(STREAM_SEED).shuffle(texts)
    return texts
