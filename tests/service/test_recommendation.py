"""GET /v1/models/{name}/recommendation: the (alpha, beta) to request for a wanted privacy gap, read off the
frontier the model owner measured and named in SCALEOT_FRONTIERS; clear errors for everything else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from data_owner_client.cli import app as cli
from data_owner_client.client import ScaleOTClient
from model_owner_server.app.main import create_app
from tests.service.conftest import Headers, make_settings, new_owner
from tests.unit.test_bench_frontier import POINTS

MODEL = "tiny-gpt2"
URL = f"/v1/models/{MODEL}/recommendation"


def _frontier(path: Path, **extra: object) -> Path:
    path.write_text(json.dumps({"benchmark": "frontier", "model": MODEL, "tasks": ["bbc_news"], "points": POINTS,
                                **extra}))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Headers]]:
    settings = make_settings(tmp_path / "data", frontiers={MODEL: _frontier(tmp_path / "frontier.json")})
    with TestClient(create_app(settings)) as client:
        yield client, new_owner(client, "alice")


def test_the_recommendation_follows_the_rule(served: tuple[TestClient, Headers]) -> None:
    client, alice = served
    body = client.get(URL, params={"privacy_gap": 3}, headers=alice).json()
    assert (body["alpha"], body["beta"]) == (0.5, 0.0)  # the same point as recommend() in the unit tests
    assert body["privacy_gap"] == {"mean": 4.0, "ci95": [2.5, 5.5]} and body["utility_gap"]["mean"] == 1.0
    assert body["plug_in"] == 70.0 and body["tasks"] == ["bbc_news"] and body["wanted_privacy_gap"] == 3.0
    careful = client.get(URL, params={"privacy_gap": 3, "conservative": "true"}, headers=alice).json()
    assert (careful["alpha"], careful["beta"], careful["conservative"]) == (0.5, 0.5, True)


def test_errors_say_what_to_do(served: tuple[TestClient, Headers]) -> None:
    client, alice = served
    assert client.get(URL, params={"privacy_gap": 3}).status_code == 401
    unreachable = client.get(URL, params={"privacy_gap": 20}, headers=alice)
    assert unreachable.status_code == 422 and "the largest is +7.0" in unreachable.json()["detail"]
    unknown = client.get("/v1/models/gpt-5/recommendation", params={"privacy_gap": 3}, headers=alice)
    assert unknown.status_code == 404 and "not served" in unknown.json()["detail"]
    unmeasured = client.get("/v1/models/tiny-llama/recommendation", params={"privacy_gap": 3}, headers=alice)
    assert unmeasured.status_code == 404 and "bench frontier --model tiny-llama" in unmeasured.json()["detail"]
    bad_queries: list[dict[str, str | int]] = [
        {}, {"privacy_gap": "three"}, {"privacy_gap": "nan"}, {"privacy_gap": "1e400"}, {"privacy_gap": 1000},
        {"privacy_gap": 3, "conservative": "maybe"}]
    for bad in bad_queries:
        assert client.get(URL, params=bad, headers=alice).status_code == 422, bad


def test_a_bad_frontier_setting_is_refused_at_start_up(tmp_path: Path) -> None:
    cases = {
        "not in SCALEOT_MODELS": {"gpt-5": _frontier(tmp_path / "a.json")},
        "cannot read": {MODEL: tmp_path / "missing.json"},
        "is not a frontier result": {MODEL: tmp_path / "b.json"},
        "a point without alpha": {MODEL: tmp_path / "c.json"},
        "was measured on 'tiny-llama'": {MODEL: _frontier(tmp_path / "d.json", model="tiny-llama")},
    }
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text(json.dumps({"benchmark": "frontier", "points": [{"alpha": "x"}]}))
    for message, frontiers in cases.items():
        with pytest.raises(ValidationError, match=message):
            make_settings(tmp_path / "data", frontiers=frontiers)


def test_the_data_owner_cli_asks_for_the_recommendation(served: tuple[TestClient, Headers],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client, alice = served
    real_init = ScaleOTClient.__init__

    def forward(request: httpx.Request) -> httpx.Response:
        answer = client.request(request.method, request.url.raw_path.decode(), headers=dict(request.headers))
        return httpx.Response(answer.status_code, content=answer.content, headers=dict(answer.headers))

    def through_the_app(self: ScaleOTClient, url: str, api_key: str | None, **kwargs: object) -> None:
        real_init(self, url, api_key, transport=httpx.MockTransport(forward))

    monkeypatch.setattr(ScaleOTClient, "__init__", through_the_app)
    common = ["--url", "http://testserver", "--api-key", alice["Authorization"].removeprefix("Bearer ")]
    runner = CliRunner()
    line = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "3", *common])
    assert line.exit_code == 0, line.output
    assert "alpha 0.5, beta 0: privacy gap +4.0 [+2.5, +5.5], utility gap +1.0 [-0.5, +2.5]" in line.stdout
    assert f"scaleot emulators request --model {MODEL} --method scaleot --alpha 0.5 --beta 0" in line.stdout
    as_json = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "4.5",
                                  "--conservative", "--json", *common])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["beta"] == 0.5
    refused = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "20", *common])
    assert refused.exit_code != 0 and "the largest is +7.0" in refused.output
