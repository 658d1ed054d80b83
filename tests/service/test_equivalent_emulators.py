"""Requests whose numbers differ but whose emulators would be the same (issue 27 item 2): alpha 0.41,
0.410000001 and 0.410000002 used to build three byte-identical emulators. Now the first request's emulator
answers the others (same 202, `reused_equivalent` and a note), built once; the emulator ids stay as they were."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Emulator, Job, JobKind
from model_owner_server.jobs.worker import Worker
from model_owner_server.settings import Settings
from tests.service.conftest import UNIFORM, Headers

SCALEOT = {"base_model": "tiny-llama", "method": "scaleot", "alpha": 0.5, "beta": 0.0, "adapter_bottom": 1,
           "adapter_top": 1}


def rows(settings: Settings) -> tuple[list[Emulator], list[Job]]:
    with Session(make_engine(settings.db_url)) as session:
        return (list(session.exec(select(Emulator)).all()),
                list(session.exec(select(Job).where(col(Job.kind) == JobKind.emulator_build)).all()))


def request(client: TestClient, headers: Headers, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/emulators", json=spec, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_alphas_with_the_same_plan_give_one_emulator_and_one_build(client: TestClient, worker: Worker,
                                                                    alice: Headers, bob: Headers,
                                                                    settings: Settings) -> None:
    first = request(client, alice, {**UNIFORM, "alpha": 0.41})
    assert not first["reused_equivalent"] and first["note"] is None
    second = request(client, alice, {**UNIFORM, "alpha": 0.410000001})
    third = request(client, bob, {**UNIFORM, "alpha": 0.410000002})  # another owner: granted the same emulator
    for answer in (second, third):
        assert answer["id"] == first["id"] and answer["status"]["job_id"] == first["status"]["job_id"]
        assert answer["reused_equivalent"] is True and "equivalent emulator was reused" in answer["note"]
        assert answer["spec"]["alpha"] == 0.41  # the emulator's own spec: what was built
    # an exact repeat is the same emulator, not a reuse; a different plan is another emulator
    assert request(client, alice, {**UNIFORM, "alpha": 0.41})["reused_equivalent"] is False
    beta = request(client, alice, {**UNIFORM, "alpha": 0.41, "beta": 0.5000001})  # the same SRC ranks as 0.5
    assert beta["id"] == first["id"] and beta["reused_equivalent"]
    other = request(client, alice, {**UNIFORM, "alpha": 0.9})
    assert other["id"] != first["id"] and not other["reused_equivalent"]
    emulators, builds = rows(settings)
    assert len(emulators) == 2 and len(builds) == 2
    assert worker.run_until_idle() == 2  # one build for the three alphas, one for 0.9
    done = client.get(f"/v1/emulators/{first['id']}", headers=bob).json()
    # ids unchanged: the artifact carries the first request's id, computed from its alpha as always
    assert done["state"] == "succeeded" and done["manifest"]["emulator_id"] == first["id"]
    assert done["manifest"]["alpha"] == 0.41
    assert worker.run_until_idle() == 0 and request(client, bob, {**UNIFORM, "alpha": 0.410000003})["id"] == first["id"]


def test_a_plan_learned_by_the_build_answers_later_requests(client: TestClient, worker: Worker, alice: Headers,
                                                            settings: Settings) -> None:
    """A scaleot request before its stage-1 profile is cached cannot be planned (request by id only, as before);
    its build records the plan, so a later equivalent request is answered by it."""
    first = request(client, alice, SCALEOT)
    assert [e.plan_sha256 for e in rows(settings)[0]] == [None]
    assert worker.run_until_idle() == 1
    assert rows(settings)[0][0].plan_sha256 is not None
    again = request(client, alice, {**SCALEOT, "alpha": 0.5000001})
    assert again["id"] == first["id"] and again["reused_equivalent"] and again["state"] == "succeeded"
    assert worker.run_until_idle() == 0 and len(rows(settings)[1]) == 1


def test_an_emulator_without_a_plan_learns_it_when_requested_again(client: TestClient, alice: Headers,
                                                                   settings: Settings) -> None:
    """An emulator from before the plan hash (NULL after the migration) gets it on its next exact request."""
    first = request(client, alice, {**UNIFORM, "alpha": 0.41})
    with Session(make_engine(settings.db_url)) as session:
        row = session.get(Emulator, first["id"])
        assert row is not None
        row.plan_sha256 = None
        session.add(row)
        session.commit()
    assert request(client, alice, {**UNIFORM, "alpha": 0.41})["reused_equivalent"] is False
    assert rows(settings)[0][0].plan_sha256 is not None
    assert request(client, alice, {**UNIFORM, "alpha": 0.410000001})["id"] == first["id"]
    assert len(rows(settings)[1]) == 1
