"""Issue 27 items 1 and 9: an uploaded evaluation JSONL is checked row by row as it arrives. Past the row
cap it is a 413, a row past the byte cap or with a lone surrogate a 422 naming its line, rows after
`limit` are not read (whether `limit` comes before or after the file), and a refusal stores nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_owner_server.app.services import evaluations as service
from model_owner_server.storage.keys import UPLOADED_DATA, evaluation_prefix
from shared.data_formats import MAX_MC_ROW_BYTES
from tests.service.conftest import Headers

ROW = {"context": "Question: the sky is", "choices": [" blue", " green"], "label": 0}
GOOD = (json.dumps(ROW) + "\n").encode()


def post(client: TestClient, alice: Headers, adapter_id: str, data: bytes, **fields: str) -> Any:
    return client.post("/v1/evaluations", data={"adapter_id": adapter_id, **fields},
                       files=[("file", ("mine.jsonl", data))], headers=alice)


def nothing_stored(client: TestClient, alice: Headers, data_dir: Path) -> bool:
    tmp = data_dir / "tmp"
    return (client.get("/v1/evaluations", headers=alice).json()["items"] == []
            and not list(data_dir.rglob("data.jsonl")) and (not tmp.exists() or not any(tmp.iterdir())))


def stored_rows(client: TestClient, evaluation_id: str) -> list[dict[str, Any]]:
    store = client.app.state.scaleot.store  # type: ignore[attr-defined]
    path = store.local_dir(evaluation_prefix(evaluation_id)) / UPLOADED_DATA
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_past_the_cap_are_a_413_and_nothing_is_stored(client: TestClient, alice: Headers,
                                                           uploaded: dict[str, Any], settings: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_EVAL_LIMIT", 50)  # the real cap is 100,000 rows: too slow for a test
    response = post(client, alice, uploaded["adapter"]["id"], GOOD * 5000)
    assert response.status_code == 413, response.text
    assert "more than 50 rows (line 51)" in response.json()["detail"] and "limit" in response.json()["detail"]
    assert nothing_stored(client, alice, settings.data_dir)
    # with a limit the same file is fine: the first rows are kept, the rest is not parsed
    accepted = post(client, alice, uploaded["adapter"]["id"], GOOD * 3 + b"not json\n" * 5000, limit="3")
    assert accepted.status_code == 202, accepted.text
    assert stored_rows(client, accepted.json()["id"]) == [ROW] * 3


def test_a_limit_sent_after_the_file_still_keeps_only_the_first_rows(client: TestClient, alice: Headers,
                                                                     uploaded: dict[str, Any]) -> None:
    boundary = "b0undary"
    parts = [("file", 'filename="mine.jsonl"', GOOD * 10), ("adapter_id", None, uploaded["adapter"]["id"].encode()),
             ("limit", None, b"4")]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
                    + (f"; {extra}".encode() if extra else b"") + b"\r\n\r\n" + value + b"\r\n"
                    for name, extra, value in parts) + f"--{boundary}--\r\n".encode()
    response = client.post("/v1/evaluations", content=body,
                           headers={**alice, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 202, response.text
    assert stored_rows(client, response.json()["id"]) == [ROW] * 4


def test_a_row_over_the_byte_cap_is_a_422_naming_it(client: TestClient, alice: Headers, uploaded: dict[str, Any],
                                                    settings: Any) -> None:
    long_row = json.dumps({**ROW, "context": "x" * (MAX_MC_ROW_BYTES + 1)}).encode() + b"\n"
    response = post(client, alice, uploaded["adapter"]["id"], GOOD + long_row + GOOD)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]["problems"]
    assert problem == (f"mine.jsonl:2: the row is {len(long_row) - 1:,} bytes; at most {MAX_MC_ROW_BYTES:,} bytes "
                       "per row: shorten it")
    assert nothing_stored(client, alice, settings.data_dir)


def test_a_lone_surrogate_is_a_422_at_upload(client: TestClient, alice: Headers, uploaded: dict[str, Any],
                                            settings: Any) -> None:
    bad = b'{"context": "the sky \\ud800 is", "choices": [" blue", " green"], "label": 0}\n'
    response = post(client, alice, uploaded["adapter"]["id"], GOOD + bad)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]["problems"]
    assert problem.startswith("mine.jsonl:2: field 'context' holds a lone surrogate (\\ud800 at character 8)")
    assert nothing_stored(client, alice, settings.data_dir)
