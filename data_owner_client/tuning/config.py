"""Local adapter tuning configuration (a few meaningful options, each documented)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TuningConfig(BaseModel):
    mode: Literal["full", "lora"] = Field("full", description="full: all parameters of the adapter blocks; "
                                          "lora: PEFT LoRA inside them")
    epochs: int = Field(2, ge=1)
    lr: float = Field(5e-5, gt=0, description="AdamW peak learning rate (LoRA wants ~1e-3)")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step (bounds memory)")
    max_len: int = Field(256, ge=8, description="tokens per example; longer contexts are cut from the left")
    schedule: Literal["linear", "cosine"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    clip_norm: float = Field(1.0, gt=0)
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (budgeted runs)")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_base_path: str | None = Field(
        None, max_length=400, description="`base_model_name_or_path` written into a LoRA adapter_config.json: "
        "where PEFT users load the FULL model from (default: ./<base model> for a registered model, the model "
        "owner's absolute directory for a local one; never a hub id)")
