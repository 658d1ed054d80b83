"""Built-in task packs: specs (data), preparation into the cache, and loading.

prepare_task("winowhy")            # -> cache_dir()/tasks/winowhy/{train,validation,test}.jsonl
data = load_mc_task("winowhy")     # data.test: list[MCExample]
"""

from shared.tasks.prepare import (
    TaskData,
    UnknownTaskError,
    as_training_examples,
    get_spec,
    load_lm_task,
    load_mc_task,
    load_task,
    prepare_task,
    split_groups,
    task_dir,
)
from shared.tasks.spec import TASKS, SplitSpec, TaskSpec

__all__ = [
    "TASKS",
    "SplitSpec",
    "TaskData",
    "TaskSpec",
    "UnknownTaskError",
    "as_training_examples",
    "get_spec",
    "load_lm_task",
    "load_mc_task",
    "load_task",
    "prepare_task",
    "split_groups",
    "task_dir",
]
