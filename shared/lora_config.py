"""The LoRA adapter config (`adapter_config.json`) the service accepts: an explicit schema.

PEFT writes some fifty fields; most switch on features the service does not run (DoRA, extra trained
modules, per-layer rank patterns, quantisation-aware variants...). A config is accepted when
- every field of `LoraConfigSchema` has the stated type and bounds (strict: `"8"` is not a number),
- every other field is switched off: null, false, an empty list or an empty object.
Anything else is refused, naming the field. The accepted config is rewritten in a canonical form
(`LoraConfigSchema` fields only), so what PEFT later loads is exactly what was checked.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.adapter_format import PEFT_CONFIG, AdapterError
from shared.bounded_json import JSONLimitError, loads_bounded

MAX_CONFIG_BYTES = 64 * 1024
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
LayerIndex = Annotated[int, Field(ge=0, le=100_000)]
# written by PEFT with a value that means "off" unless another (refused) field switches the feature on
INERT = {"megatron_core", "qalora_group_size", "auto_mapping", "peft_version"}


class LoraConfigSchema(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    peft_type: Literal["LORA"]
    r: int = Field(ge=1, le=1024)
    lora_alpha: float = Field(gt=0, le=65536)
    target_modules: list[ModuleName] = Field(min_length=1, max_length=32)
    layers_to_transform: list[LayerIndex] = Field(min_length=1, max_length=1024)
    layers_pattern: ModuleName | None = Field(None, description="the block list's name (`layers`, `h`); "
                                              "`scaleot train --mode lora` writes it")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: Literal["none"] = "none"
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    init_lora_weights: bool = True
    inference_mode: bool = True
    task_type: Literal["CAUSAL_LM"] | None = None
    base_model_name_or_path: str | None = Field(None, max_length=400)
    revision: str | None = Field(None, max_length=200)


def _switched_off(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {}


def _problems(error: ValidationError) -> list[str]:
    out = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "(config)"
        out.append(f"{PEFT_CONFIG}: field {where!r}: {item['msg']}")
    return out


def loose_object(raw: bytes) -> dict[str, Any]:
    """The config as a plain JSON object when it is one within the bounds, else {} (for reporting the
    problems of its well-typed fields beside the schema's)."""
    try:
        value = loads_bounded(raw) if len(raw) <= MAX_CONFIG_BYTES else None
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def parse_lora_config(raw: bytes) -> dict[str, Any]:
    """The canonical config dict, or AdapterError naming every refused field."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise AdapterError([f"{PEFT_CONFIG}: larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        config = loads_bounded(raw)
    except JSONLimitError as exc:
        raise AdapterError([f"{PEFT_CONFIG}: refused: {exc}"]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError([f"{PEFT_CONFIG}: not valid JSON ({exc})"]) from None
    if not isinstance(config, dict):
        raise AdapterError([f"{PEFT_CONFIG}: must be a JSON object"])
    known = set(LoraConfigSchema.model_fields)
    problems = [f"{PEFT_CONFIG}: field {name[:80]!r} is not supported by this service (only null, false or empty "
                f"is accepted for it, got {json.dumps(value)[:80]})"
                for name, value in config.items()
                if name not in known and name not in INERT and not _switched_off(value)]
    try:
        checked = LoraConfigSchema.model_validate({k: v for k, v in config.items() if k in known})
    except ValidationError as exc:
        problems += _problems(exc)
    if problems:
        raise AdapterError(problems)
    return checked.model_dump(mode="json")
