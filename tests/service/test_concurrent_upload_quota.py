"""The stored-bytes quota holds for adapter uploads sent at the same time: each is checked before its probe
(so a refused one costs no probe) and again when it is published, so uploads that all passed the first check
while the others were probing cannot together store more than the quota (they did: six 0.4 MB uploads at
once stored 2.3 MiB under a 1 MiB quota)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from model_owner_server.db.engine import make_engine
from model_owner_server.db.models import Adapter
from model_owner_server.settings import Settings
from tests.service.conftest import Headers, make_settings, upload

MIB = 1 << 20


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", quota_stored_mb=1)


def test_simultaneous_uploads_stay_within_the_stored_quota(client: TestClient, alice: Headers, built: dict[str, Any],
                                                           settings: Settings) -> None:
    data = (built["adapter_dir"] / "adapter.safetensors").read_bytes()
    fit = MIB // len(data)
    assert fit >= 1
    with ThreadPoolExecutor(fit + 4) as pool:
        answers = list(pool.map(lambda _: upload(client, alice, built["emulator"]["id"],
                                                 [("adapter.safetensors", data)]), range(fit + 4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * fit + [429] * 4, [a.text[:200] for a in answers]
    assert all("SCALEOT_QUOTA_STORED_MB" in a.json()["detail"] for a in answers if a.status_code == 429)
    with Session(make_engine(settings.db_url)) as session:
        rows = session.exec(select(Adapter)).all()
    assert len(rows) == fit and sum(r.size for r in rows) <= MIB
    store = client.app.state.scaleot.store  # type: ignore[attr-defined]
    assert sorted({key.split("/")[1] for key in store.list("adapters")}) == sorted(r.id for r in rows)
