"""GET /v1/models/{name}/recommendation: the (alpha, beta) to request for a wanted privacy gap, read off the
frontier the model owner measured and named in SCALEOT_FRONTIERS; clear errors for everything else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from data_owner_client.cli import app as cli
from data_owner_client.client import ScaleOTClient
from model_owner_server.app.main import create_app
from model_owner_server.cli import app as server_cli
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
    frontier = _frontier(tmp_path / "frontier.json", learning_rates={"bbc_news": 3e-4})
    settings = make_settings(tmp_path / "data", frontiers={MODEL: frontier})
    with TestClient(create_app(settings)) as client:
        yield client, new_owner(client, "alice")


def test_the_recommendation_follows_the_rule(served: tuple[TestClient, Headers]) -> None:
    client, alice = served
    body = client.get(URL, params={"privacy_gap": 3}, headers=alice).json()
    assert (body["alpha"], body["beta"]) == (0.5, 0.0)  # the same point as recommend() in the unit tests
    assert body["privacy_gap"] == {"mean": 4.0, "ci95": [2.5, 5.5]} and body["utility_gap"]["mean"] == 1.0
    assert body["plug_in"] == 70.0 and body["tasks"] == ["bbc_news"] and body["wanted_privacy_gap"] == 3.0
    assert "in-sample pick" in body["caveat"] and "bbc_news" in body["caveat"]  # read off its own test items
    assert body["learning_rates"] == {"bbc_news": 3e-4}  # chosen on the task's validation split
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
    with pytest.raises(ValidationError, match="not in SCALEOT_MODELS"):
        make_settings(tmp_path / "data", frontiers={"gpt-5": _frontier(tmp_path / "a.json")})
    point = dict(POINTS[1])
    bad_files = {
        "b.json": ("{not json", "is not a frontier result"),
        "c.json": ({"benchmark": "frontier", "points": [{"alpha": "x"}]}, "points.0.method: Field required"),
        "d.json": ({"benchmark": "frontier", "points": [{**point, "privacy_gap": {"mean": float("inf"),
                                                                                 "ci95": [0, 1]}}]},
                   "points.0.privacy_gap.mean: Input should be a finite number"),
        "e.json": ({"benchmark": "frontier", "points": [{**point, "plug_in": {"mean": "abc"}}]},
                   "points.0.plug_in.mean"),
        "f.json": ({"benchmark": "frontier", "points": POINTS, "tasks": None}, "tasks: Input should be a valid list"),
        "g.json": ({"benchmark": "frontier", "points": POINTS, "adapter": {"bottom": -1, "top": 2}},
                   "adapter.bottom: Input should be greater than or equal to 0"),
    }
    cases = {"cannot read": tmp_path / "missing.json", "was measured on 'tiny-llama'": _frontier(
        tmp_path / "h.json", model="tiny-llama")}
    for name, (content, message) in bad_files.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
        cases[message] = tmp_path / name
    for message, path in cases.items():
        settings = make_settings(tmp_path / "data", frontiers={MODEL: path})
        with pytest.raises(ValueError, match=f"SCALEOT_FRONTIERS\\['{MODEL}'\\].*{message}"):
            settings.load_frontiers()
    serve = CliRunner().invoke(server_cli, ["serve"], env={
        "SCALEOT_ENVIRONMENT": "development", "SCALEOT_DATA_DIR": str(tmp_path / "data"),
        "SCALEOT_MODELS": json.dumps([MODEL]), "SCALEOT_FRONTIERS": json.dumps({MODEL: str(tmp_path / "b.json")})})
    assert serve.exit_code == 2 and "is not a frontier result" in serve.output and "Traceback" not in serve.output


def test_the_split_it_was_measured_with_comes_along_and_path_names_resolve(tmp_path: Path) -> None:
    local = str(tmp_path / "models" / "my-model")  # a model owner's local directory: a name with slashes
    settings = make_settings(tmp_path / "data", models=[MODEL, local], frontiers={
        MODEL: _frontier(tmp_path / "s.json", adapter={"bottom": 1, "top": 3}),
        local: _frontier(tmp_path / "l.json", model=local)})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        body = client.get(URL, params={"privacy_gap": 3}, headers=alice).json()
        assert (body["adapter_bottom"], body["adapter_top"]) == (1, 3)
        encoded = quote(local, safe="")
        answer = client.get(f"/v1/models/{encoded}/recommendation", params={"privacy_gap": 3}, headers=alice)
        assert answer.status_code == 200 and answer.json()["model"] == local
        assert (answer.json()["adapter_bottom"], answer.json()["adapter_top"]) == (2, 2)  # before the record


def test_the_data_owner_cli_asks_for_the_recommendation(served: tuple[TestClient, Headers],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client, alice = served
    real_init = ScaleOTClient.__init__

    def forward(request: httpx.Request) -> httpx.Response:
        answer = client.request(request.method, request.url.raw_path.decode(), headers=dict(request.headers),
                                content=request.content)
        return httpx.Response(answer.status_code, content=answer.content, headers=dict(answer.headers))

    def through_the_app(self: ScaleOTClient, url: str, api_key: str | None, **kwargs: object) -> None:
        real_init(self, url, api_key, transport=httpx.MockTransport(forward))

    monkeypatch.setattr(ScaleOTClient, "__init__", through_the_app)
    common = ["--url", "http://testserver", "--api-key", alice["Authorization"].removeprefix("Bearer ")]
    runner = CliRunner()
    line = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "3", *common])
    assert line.exit_code == 0, line.output
    assert "alpha 0.5, beta 0: privacy gap +4.0 [+2.5, +5.5], utility gap +1.0 [-0.5, +2.5]" in line.stdout
    assert (f"scaleot emulators request --model {MODEL} --method scaleot --alpha 0.5 --beta 0 --adapter-bottom 2 "
            "--adapter-top 2") in line.stdout
    as_json = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "4.5",
                                  "--conservative", "--json", *common])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["beta"] == 0.5
    refused = runner.invoke(cli, ["emulators", "recommend", "--model", MODEL, "--privacy-gap", "20", *common])
    assert refused.exit_code != 0 and "the largest is +7.0" in refused.output
    # the recommended dial in one step: request takes it from the service instead of --alpha/--beta
    requested = runner.invoke(cli, ["emulators", "request", "--model", MODEL, "--privacy-gap", "3", "--alpha", "0.9",
                                    "--json", *common])
    assert requested.exit_code == 0, requested.output
    spec = json.loads(requested.stdout)["spec"]
    assert (spec["method"], spec["alpha"], spec["beta"], spec["adapter_bottom"]) == ("scaleot", 0.5, 0.0, 2)
    assert "recommended for a privacy gap of 3: scaleot alpha 0.5, beta 0" in requested.stderr
    unreachable = runner.invoke(cli, ["emulators", "request", "--model", MODEL, "--privacy-gap", "20", *common])
    assert unreachable.exit_code != 0 and "the largest is +7.0" in unreachable.output


def test_a_paper_table_result_serves_as_the_frontier(tmp_path: Path) -> None:
    """The standard paper-table (more tasks, two seeds) can be the served frontier: its summary entries are
    the points; a variant that has not reached every task yet is left out, whatever its gaps."""
    partial = {**POINTS[4], "privacy_gap": {"mean": 9.0, "ci95": [8.0, 10.0]}, "utility_gap": {"mean": -5.0, "ci95":
               [-6.0, -4.0]}, "alpha": 0.75, "beta": 0.75, "n_tasks": 1}
    table = {"benchmark": "paper-table", "model": MODEL, "profile_id": "prof-x", "adapter": {"bottom": 1, "top": 3},
             "tasks": [{"task": "bbc_news"}, {"task": "intent_recognition"}],
             "summary": [{**p, "n_tasks": 2} for p in POINTS] + [partial]}
    path = tmp_path / "paper-table.json"
    path.write_text(json.dumps(table))
    settings = make_settings(tmp_path / "data", frontiers={MODEL: path})
    with TestClient(create_app(settings)) as client:
        alice = new_owner(client, "alice")
        body = client.get(URL, params={"privacy_gap": 3}, headers=alice).json()
        assert (body["alpha"], body["beta"]) == (0.5, 0.0)  # not the partial (0.75, 0.75) point
        assert body["tasks"] == ["bbc_news", "intent_recognition"]
        assert (body["adapter_bottom"], body["adapter_top"]) == (1, 3)
    result = CliRunner().invoke(server_cli, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "3"])
    assert result.exit_code == 0 and "alpha 0.5, beta 0" in result.output
    path.write_text(json.dumps({**table, "summary": "nope"}))
    refused = CliRunner().invoke(server_cli, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "3"])
    assert refused.exit_code != 0 and "not a frontier result" in refused.output
    path.write_text(json.dumps({**table, "tasks": "bbc_news"}))  # a string is not read as its letters
    letters = CliRunner().invoke(server_cli, ["emulators", "recommend", "--frontier", str(path), "--privacy-gap", "3"])
    assert letters.exit_code != 0 and "tasks: Input should be a valid list" in letters.output
