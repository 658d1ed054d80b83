from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from data_owner_client.cli import app
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from shared.adapter_format import ADAPTER_FILE

runner = CliRunner()


def _emulator(tmp_path: Path) -> Path:
    base = load_base_model("tiny-opt")
    build_emulator(base, EmulatorSpec(base_model="tiny-opt", method="uniform", alpha=0.5, adapter_bottom=1,
                                      adapter_top=1), None, tmp_path / "emu")
    return tmp_path / "emu"


def test_train_writes_an_adapter(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"context": f"q{i}", "target": " a"}) for i in range(8)) + "\n"
                    + json.dumps({"text": "plain text rows work too"}) + "\n")
    result = runner.invoke(app, ["train", "--emulator", str(_emulator(tmp_path)), "--data", str(data),
                                 "--valid", str(data), "--out", str(tmp_path / "ad"), "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 1 and (tmp_path / "ad" / ADAPTER_FILE).is_file()


def test_train_errors_are_one_clear_line(tmp_path: Path) -> None:
    emu = _emulator(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "q", "target": " a"}\n{"context": 3}\n')
    result = runner.invoke(app, ["train", "--emulator", str(emu), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "bad.jsonl:2: field 'context' must be a string" in result.output
    assert "Traceback" not in result.output
    (emu / "emulator.safetensors").write_bytes(b"tampered")
    good = tmp_path / "good.jsonl"
    good.write_text('{"context": "q", "target": " a"}\n')
    result = runner.invoke(app, ["train", "--emulator", str(emu), "--data", str(good), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "emulator.safetensors: size" in result.output
    result = runner.invoke(app, ["train", "--emulator", str(emu), "--data", str(good), "--out", str(tmp_path / "o"),
                                 "--mode", "qlora"])
    assert result.exit_code == 2 and "--mode must be full or lora" in result.output
