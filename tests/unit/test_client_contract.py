"""The client parses the service's answers with the contract's models (`shared.api`): typed results,
and an answer that does not fit the contract is one clear error, never a KeyError deep in the CLI."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from data_owner_client.cli import app
from data_owner_client.client import ClientError, ScaleOTClient
from shared.api import AdapterList, AdapterOut, EmulatorOut, JobStatus
from shared.job_outcomes import JobState

ADAPTER = AdapterOut(id="ada-1", emulator_id="emu-1", kind="full", files={}, size=12, created_at=0.0)


def emulator(state: JobState) -> EmulatorOut:
    return EmulatorOut(id="emu-1", base_model="m", method="uniform", spec={"alpha": 0.5}, state=state,
                       created_at=0.0, status=JobStatus(job_id="job-1", state=state, message="stage 2"))


def serve(routes: dict[str, object]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=routes[request.url.path])
    return httpx.MockTransport(handler)


def test_answers_come_back_as_the_contract_models() -> None:
    transport = serve({"/v1/emulators/emu-1": emulator(JobState.running).model_dump(mode="json"),
                       "/v1/adapters": AdapterList(items=[ADAPTER]).model_dump(mode="json")})
    with ScaleOTClient("http://test", "key", transport=transport) as client:
        got = client.emulator("emu-1")
        assert isinstance(got, EmulatorOut) and got.status.state is JobState.running
        assert client.adapters() == [ADAPTER]


def test_waiting_stops_at_a_finished_state() -> None:
    answers = iter([emulator(JobState.queued), emulator(JobState.running), emulator(JobState.failed)])
    seen: list[JobState] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers).model_dump(mode="json"))

    with ScaleOTClient("http://test", "key", transport=httpx.MockTransport(handler)) as client:
        final = client.wait_emulator("emu-1", poll=0.0, on_status=lambda e: seen.append(e.status.state))
    assert final.status.state is JobState.failed and seen == [JobState.queued, JobState.running, JobState.failed]


def test_an_answer_outside_the_contract_is_one_clear_error() -> None:
    transport = serve({"/v1/emulators/emu-1": {"id": "emu-1", "status": {"state": "exploded"}}})
    with ScaleOTClient("http://test", "key", transport=transport) as client, pytest.raises(ClientError) as caught:
        client.emulator("emu-1")
    assert "unexpected answer to GET /v1/emulators/emu-1" in str(caught.value)
    assert "upgrade it" in str(caught.value)


def test_the_cli_prints_typed_answers_as_json_and_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = serve({"/v1/emulators/emu-1": emulator(JobState.running).model_dump(mode="json")})
    real_init = ScaleOTClient.__init__

    def with_transport(self: ScaleOTClient, url: str, api_key: str | None, **kwargs: object) -> None:
        real_init(self, url, api_key, transport=transport)

    monkeypatch.setattr(ScaleOTClient, "__init__", with_transport)
    runner = CliRunner()
    common = ["--url", "http://test", "--api-key", "k"]
    line = runner.invoke(app, ["emulators", "status", "emu-1", *common])
    assert line.exit_code == 0 and "emu-1 uniform on m: running 0% (stage 2)" in line.stdout
    as_json = runner.invoke(app, ["emulators", "status", "emu-1", *common, "--json"])
    assert as_json.exit_code == 0 and '"state": "running"' in as_json.stdout
