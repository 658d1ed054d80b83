"""`scaleot-server keys revoke --owner NAME` (issue 27, item 9): the docs named it, it did not exist.
When it returns, the next request with a revoked key is refused by every API process, also one that
had just accepted the key and remembered it (the key cache, SCALEOT_AUTH_CACHE_S)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from model_owner_server.app.core.key_cache import KeyCache
from model_owner_server.app.core.security import hash_key
from model_owner_server.app.main import create_app
from model_owner_server.cli import app as cli
from tests.service.conftest import ADMIN_KEY, auth, make_settings, new_owner

TTL = 1.0


def test_keys_revoke_takes_effect_on_the_next_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "data", auth_cache_s=TTL)
    # the command reads the same settings as the API, from the environment
    for name, value in {"SCALEOT_DATA_DIR": str(settings.data_dir), "SCALEOT_ADMIN_KEY": ADMIN_KEY,
                        "SCALEOT_DATABASE_URL": settings.db_url, "SCALEOT_AUTH_CACHE_S": str(TTL)}.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    with TestClient(create_app(settings)) as client:
        created = runner.invoke(cli, ["keys", "create", "--owner", "dave", "--json"])
        assert created.exit_code == 0, created.output
        dave = json.loads(created.stdout)["api_key"]
        erin = new_owner(client, "erin")
        assert client.get("/v1/emulators", headers=auth(dave)).status_code == 200
        assert client.app.state.scaleot.keys.get(hash_key(dave)) is not None  # remembered by this API process

        started = time.monotonic()
        revoked = runner.invoke(cli, ["keys", "revoke", "--owner", "dave", "--json"])
        assert revoked.exit_code == 0, revoked.output
        assert json.loads(revoked.stdout) == {"name": "dave", "revoked": 1, "waited_s": TTL}
        assert time.monotonic() - started >= TTL  # it waited out the cache before returning
        refused = client.get("/v1/emulators", headers=auth(dave))
        assert refused.status_code == 401, refused.text  # the very next request
        assert client.get("/v1/emulators", headers=erin).status_code == 200  # other owners keep their keys

        again = runner.invoke(cli, ["keys", "revoke", "--owner", "dave"])
        assert again.exit_code == 0 and "revoked 0 key(s) of data owner dave" in again.stdout
        unknown = runner.invoke(cli, ["keys", "revoke", "--owner", "nobody"])
        assert unknown.exit_code == 2 and "no data owner named 'nobody'" in unknown.output


def test_cache_entry_lives_ttl_from_the_start_of_its_check() -> None:
    """An entry put after a slow database read still expires TTL after the read began: a revocation
    committed during the read is outlived by at most the TTL that `keys revoke` waits."""
    cache: KeyCache[str] = KeyCache(ttl_s=10.0)
    cache.put("late", "owner", checked_at=time.monotonic() - 10.5)
    assert cache.get("late") is None
    cache.put("fresh", "owner", checked_at=time.monotonic())
    assert cache.get("fresh") == "owner"
