"""Stage-1 orchestration in one place (`obtain_profile`) and stage-1 overrides in one form (a JSON object
of Stage1Config fields): the worker, the CLI and the benchmarks share both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from typer.testing import CliRunner

from model_owner_server.base_models import load_base_model
from model_owner_server.cli import app
from model_owner_server.emulators.checkpoint import META_FILE, STATE_FILE
from model_owner_server.emulators.obtain import obtain_profile
from model_owner_server.emulators.profile import checkpoint_dir, parse_stage1_overrides, stage1_config
from model_owner_server.emulators.stage1 import base_profile_id
from model_owner_server.settings import Settings
from tests.unit.helpers import tiny_config

TINY = {"steps": 2, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8, "fit_sequences": 8, "fit_steps": 20}


def test_overrides_are_one_json_object_of_stage1_fields() -> None:
    assert parse_stage1_overrides('{"steps": 40, "lr": 0.002}') == {"steps": 40, "lr": 0.002}
    assert parse_stage1_overrides("") == {} and parse_stage1_overrides({}) == {}
    config = stage1_config('{"steps": 40}', 1, 3)
    assert (config.steps, config.adapter_bottom, config.adapter_top, config.batch_size) == (40, 1, 3, 4)


@pytest.mark.parametrize(("overrides", "message"), [
    ("{steps: 4}", "must be a JSON object"),
    ("[4]", "must be a JSON object"),
    ('{"adapter_top": 1}', "cannot set adapter_top: the adapter split comes from the emulator"),
    ('{"stepz": 4}', "unknown stage-1 setting(s) stepz; known: harmonizer_rank"),
])
def test_bad_overrides_say_what_to_fix(overrides: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"stage-1|JSON") as caught:
        parse_stage1_overrides(overrides)
    assert message in str(caught.value)


def test_a_bad_override_value_names_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_stage1_overrides({"steps": -1})
    assert caught.value.errors()[0]["loc"] == ("steps",)


def test_settings_take_stage1_as_json_and_refuse_the_old_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOT_ENVIRONMENT", "development")
    monkeypatch.setenv("SCALEOT_STAGE1", '{"steps": 5, "seq_len": 64}')
    assert Settings().stage1 == {"steps": 5, "seq_len": 64}
    monkeypatch.setenv("SCALEOT_STAGE1", '{"stepz": 5}')
    with pytest.raises(ValidationError, match="unknown stage-1 setting"):
        Settings()
    monkeypatch.delenv("SCALEOT_STAGE1")
    monkeypatch.setenv("SCALEOT_STAGE1_STEPS", "150")
    with pytest.raises(ValidationError, match=r"SCALEOT_STAGE1_STEPS no longer read: .*SCALEOT_STAGE1="):
        Settings()


def test_the_cli_refuses_bad_stage1_json_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["emulators", "build", "--model", "tiny-llama", "--out", str(tmp_path / "e"),
                                      "--stage1", '{"batch_size": 0}'])
    assert result.exit_code == 2 and "batch_size: Input should be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "e").exists()


def test_obtain_profile_trains_once_then_returns_the_cached_profile() -> None:
    base = load_base_model("tiny-llama")
    config = tiny_config(**TINY)
    started: list[bool] = []
    notices: list[str] = []
    steps: list[int] = []
    first = obtain_profile(base, config, on_start=lambda: started.append(True),
                           on_progress=lambda p: steps.append(p.step), on_notice=notices.append)
    assert started == [True] and steps == [0, 1, 2] and notices == []  # 0: the initialisation phase
    by_name = obtain_profile("tiny-llama", config, on_start=lambda: started.append(True), on_notice=notices.append)
    assert by_name.meta.profile_id == first.meta.profile_id == base_profile_id(base, config)
    assert started == [True] and notices == [f"using cached stage-1 profile {first.meta.profile_id}"]


def test_an_unusable_checkpoint_is_discarded_once_and_stage1_starts_over() -> None:
    base = load_base_model("tiny-llama")
    config = tiny_config(**TINY)
    partial = checkpoint_dir(base_profile_id(base, config))
    partial.mkdir(parents=True)
    (partial / META_FILE).write_text(json.dumps({"step": 1}))
    save_file({"unrelated": torch.zeros(1)}, partial / STATE_FILE)  # no harmonizer weights: cannot be restored
    notices: list[str] = []
    profile = obtain_profile(base, config, on_notice=notices.append)
    assert notices == ["stage 1: checkpoint unusable, starting over"]
    assert len(profile.meta.curve) == 2 and not partial.exists()


def test_a_setting_that_is_not_json_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOT_ENVIRONMENT", "development")
    monkeypatch.setenv("SCALEOT_STAGE1", "steps=40")
    result = CliRunner().invoke(app, ["worker", "--once"])
    assert result.exit_code == 2 and 'field "stage1"' in result.output and "are JSON" in result.output
    assert "Traceback" not in result.output
