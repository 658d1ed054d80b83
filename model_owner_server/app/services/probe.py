"""Prove an adapter before it is accepted: plug it into the full model and run a short forward.

The header and value checks (`adapter_checks.validate`) see each tensor alone; an adapter can pass
them and still break the model (weights of 3e38 overflow in the first matmul, a LoRA config PEFT cannot
load). The probe runs what generation and evaluation will run: `plug_in` on the full model, one
forward over each of a few short probe texts, every block's activations and the logits finite and the
logits within MAX_ABS_LOGIT (so sampling at the lowest accepted temperature cannot overflow either).
One sentence is not enough: an adapter can be silent on it and overflow on a token it lacks (a
capital "Z" alone at the first position), so the texts cover every ASCII letter and digit, punctuation,
non-ASCII text and single characters at the start. Evaluation and generation still check their own
outputs (non-finite -> refused), since no probe covers every input.
The plugged model shares every tensor outside the adapter's blocks with the loaded base (`plug_in`), so
a probe costs the adapter's blocks and activations, not a copy of the model; it runs on a probe thread
(`ProbePool`), never on an API thread.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from model_owner_server.plug_in import CheckedAdapter, plug_in
from shared.adapter_format import AdapterError

log = logging.getLogger("scaleot.api")

PROBE_TEXTS: tuple[str, ...] = (
    "An adapter is plugged into the full model and tried on this sentence before it is accepted.",
    "Z", "Q", "x", "7", "?", " ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\n\t",
    "Zürich, São Paulo, Łódź, Ελλάδα, Москва, 東京, 서울, مصر, हिन्दी 🙂",
)
MAX_ABS_LOGIT = 1e4  # real models stay far below; / the lowest sampling temperature (0.01) stays finite


def _problems(hidden: tuple[torch.Tensor, ...], logits: torch.Tensor) -> list[str]:
    for index, state in enumerate(hidden):
        if not torch.isfinite(state).all():
            where = "the embeddings" if index == 0 else f"block {index - 1}"
            return [f"probe forward: activations after {where} are not finite (NaN or Inf): the adapter's "
                    "weights overflow the full model"]
    if not torch.isfinite(logits).all():
        return ["probe forward: the logits are not finite (NaN or Inf)"]
    peak = float(logits.abs().max())
    if peak > MAX_ABS_LOGIT:
        return [f"probe forward: logits reach {peak:.3g} (at most {MAX_ABS_LOGIT:g} is accepted)"]
    return []


@torch.no_grad()
def prove(base: LoadedBase, checked: CheckedAdapter) -> PreTrainedModel:
    """The full model with the adapter plugged in, once every probe text passed; AdapterError otherwise."""
    try:
        model = plug_in(base, checked)
    except Exception as exc:  # third-party loading code meeting an untrusted adapter: refuse, never 500
        log.warning("adapter probe failed: %s", exc, exc_info=True)
        raise AdapterError([f"the adapter cannot be plugged into the full model and run: "
                            f"{type(exc).__name__}: {str(exc)[:300]}"]) from exc
    for text in PROBE_TEXTS:  # one forward each: every text starts at position 0, as a real prompt does
        try:
            ids = base.tokenizer(text, return_tensors="pt")["input_ids"]
            if ids.shape[1] == 0:
                continue
            output = model(input_ids=ids, output_hidden_states=True)
        except Exception as exc:
            log.warning("adapter probe failed: %s", exc, exc_info=True)
            raise AdapterError([f"the adapter cannot be plugged into the full model and run: "
                                f"{type(exc).__name__}: {str(exc)[:300]}"]) from exc
        problems = _problems(tuple(output.hidden_states or ()), output.logits)
        if problems:
            raise AdapterError([f"{p} (on the probe text {text[:40]!r})" for p in problems])
    return model
