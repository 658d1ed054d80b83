"""The artifact store's key layout, in one place: every writer and reader names keys through it.

    emulators/<emulator id>/<file>        an emulator artifact (manifest.json, weights, tokenizer, ...)
    adapters/<adapter id>/<file>          an uploaded adapter
    evaluations/<evaluation id>/data.jsonl  a data owner's uploaded evaluation items
    agreements/<check id>/prompts.jsonl   a data owner's unlabelled prompts for an agreement check
    prompt-sets/<set id>/prompts.jsonl    a data owner's unlabelled prompts for task calibration
"""

from __future__ import annotations

UPLOADED_DATA = "data.jsonl"  # the uploaded evaluation items, under evaluation_prefix
PROMPTS_FILE = "prompts.jsonl"  # a data owner's unlabelled prompts, under agreement_prefix and prompt_set_prefix


def emulator_prefix(emulator_id: str) -> str:
    return f"emulators/{emulator_id}"


def emulator_file(emulator_id: str, name: str) -> str:
    return f"{emulator_prefix(emulator_id)}/{name}"


def adapter_prefix(adapter_id: str) -> str:
    return f"adapters/{adapter_id}"


def evaluation_prefix(evaluation_id: str) -> str:
    return f"evaluations/{evaluation_id}"


def evaluation_data(evaluation_id: str) -> str:
    return f"{evaluation_prefix(evaluation_id)}/{UPLOADED_DATA}"


def agreement_prefix(check_id: str) -> str:
    return f"agreements/{check_id}"


def agreement_prompts(check_id: str) -> str:
    return f"{agreement_prefix(check_id)}/{PROMPTS_FILE}"


def prompt_set_prefix(set_id: str) -> str:
    return f"prompt-sets/{set_id}"


def prompt_set_data(set_id: str) -> str:
    return f"{prompt_set_prefix(set_id)}/{PROMPTS_FILE}"
