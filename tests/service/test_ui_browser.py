"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium, never a downloaded one)
driven by Playwright against a real `scaleot-server serve` on loopback with tiny models. One server and one
browser for the module: sign in, the overview, an emulator's layer map, an evaluation whose task name is a
script (shown as text, never run), a forged CSRF token refused, the admin cancelling a running job, a data
owner kept from another owner's emulator. With SCALEOT_UI_SCREENSHOTS=DIR each page is saved there."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.adapters import make_adapter
from tests.service.conftest import ADMIN, ADMIN_KEY, UNIFORM, auth, download, upload
from tests.service.test_server import SLOW, Server, wait_state
from tests.service.ui_helpers import XSS, frontier_file

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/install.sh does, where apt "
                "works) to run the browser tests", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
MC = "\n".join(json.dumps({"context": f"Q{i}: the sky is", "choices": [" blue", " green"], "label": 0})
               for i in range(6)).encode()
SHOTS = os.environ.get("SCALEOT_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A serve with one worker; alice's built emulator, adapter and finished evaluation (task name: a script)."""
    root = tmp_path_factory.mktemp("ui-browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOT_") or k == "SCALEOT_CACHE_DIR"}
    env.update(SCALEOT_DATA_DIR=str(root / "data"), SCALEOT_ADMIN_KEY=ADMIN_KEY,
               SCALEOT_MODELS='["tiny-gpt2", "tiny-llama"]', SCALEOT_HEARTBEAT_S="0.3", SCALEOT_WORKER_POLL_S="0.2",
               SCALEOT_STAGE1='{"steps": 150, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
               SCALEOT_FRONTIERS=json.dumps({"tiny-gpt2": str(frontier_file(root / "frontier.json", "tiny-gpt2"))}),
               OMP_NUM_THREADS="1")
    server = Server(env, root / "server.log")
    try:
        client = server.start()
        keys = {name: client.post("/v1/owners", json={"name": name}, headers=ADMIN).json()["api_key"]
                for name in ("alice", "bob")}
        alice = auth(keys["alice"])
        emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=alice).json()["id"]
        emulator = wait_state(client, f"/v1/emulators/{emulator_id}", alice, {"succeeded"}, timeout=120)
        make_adapter(download(client, alice, emulator, root / "emulator"), root / "adapter")
        adapter = upload(client, alice, emulator_id, [("adapter.safetensors",
                                                        (root / "adapter/adapter.safetensors").read_bytes())]).json()
        evaluation = client.post("/v1/evaluations", data={"adapter_id": adapter["id"], "task": XSS},
                                 files={"file": ("mc.jsonl", MC)}, headers=alice).json()
        wait_state(client, f"/v1/evaluations/{evaluation['id']}", alice, {"succeeded"}, timeout=120)
        yield {"url": server.url, "client": client, "keys": keys, "emulator": emulator, "adapter": adapter,
               "evaluation": evaluation}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with sync_api.sync_playwright() as running:
        yield running


def new_context(playwright: Any, user_data: str) -> Any:
    return playwright.chromium.launch_persistent_context(user_data, executable_path=str(CHROMIUM), headless=True,
                                                          args=ARGS, viewport={"width": 1280, "height": 900})


@pytest.fixture(scope="module")
def admin_page(playwright: Any, service: dict[str, Any]) -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as user_data:
        context = new_context(playwright, user_data)
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs
        yield page
        context.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/ui/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui")


def test_sign_in_and_overview(admin_page: Any, service: dict[str, Any]) -> None:
    url = service["url"]
    response = admin_page.goto(f"{url}/ui")
    assert response.status == 401 and "Sign in" in admin_page.inner_text("main")
    admin_page.goto(f"{url}/ui/login")
    shot(admin_page, "login")
    admin_page.fill("#key", "sot_wrong_key")
    admin_page.click("button[type=submit]")
    assert "invalid API key" in admin_page.inner_text("#login-error")
    sign_in(admin_page, url, ADMIN_KEY)
    assert "model owner (admin)" in admin_page.inner_text("#signed-in-as")
    assert "tiny-gpt2" in admin_page.inner_text("#models")
    shot(admin_page, "overview")
    cookies = {c["name"]: c for c in admin_page.context.cookies()}
    session = cookies["scaleot_ui"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and ADMIN_KEY not in session["value"]
    assert admin_page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it


def test_emulator_layer_map(admin_page: Any, service: dict[str, Any]) -> None:
    emulator = service["emulator"]
    admin_page.goto(f"{service['url']}/ui/emulators")
    shot(admin_page, "emulators")
    admin_page.click(f"text={emulator['id']}")
    admin_page.wait_for_selector("#layer-map")
    assert admin_page.locator("#layer-map g.cell").count() == emulator["manifest"]["num_full_layers"]
    assert admin_page.locator("#layer-map rect.k-adapter").count() == len(
        [e for e in emulator["manifest"]["layers"] if e["kind"] == "adapter"])
    assert admin_page.locator("#layer-map").bounding_box()["width"] > 300  # drawn, not empty
    assert "manifest.json" in admin_page.inner_text("#files")
    shot(admin_page, "emulator")


def test_script_in_a_task_name_is_text_and_forged_forms_are_refused(admin_page: Any, service: dict[str, Any]
                                                                    ) -> None:
    admin_page.goto(f"{service['url']}/ui/evaluations/{service['evaluation']['id']}")
    assert admin_page.inner_text("#task").startswith(XSS)  # shown as the characters it is
    assert admin_page.locator("main script, main img").count() == 0 and admin_page.dialogs == []
    assert admin_page.locator("#matrix").is_visible() and admin_page.locator("#comparison").is_visible()
    shot(admin_page, "evaluation")
    admin_page.goto(f"{service['url']}/ui/evaluations")
    assert admin_page.dialogs == []
    for name in ("adapters", "owners", "frontier?model=tiny-gpt2&privacy_gap=4"):
        admin_page.goto(f"{service['url']}/ui/{name}")
        shot(admin_page, name.split("?")[0])
    assert "alpha=0.5, beta=0.0" in admin_page.inner_text("#recommendation")
    assert admin_page.locator("svg.frontier circle").count() == 3
    # a forged token in the sign-out form: the server refuses it and the session survives
    admin_page.goto(f"{service['url']}/ui")
    admin_page.evaluate("document.querySelector('form.who input[name=csrf]').value = 'forged'")
    admin_page.click("form.who button")
    assert "CSRF" in admin_page.inner_text("#error-message")
    admin_page.goto(f"{service['url']}/ui")
    assert "model owner (admin)" in admin_page.inner_text("#signed-in-as")


def test_admin_cancels_a_running_job(admin_page: Any, service: dict[str, Any]) -> None:
    client: httpx.Client = service["client"]
    alice = auth(service["keys"]["alice"])
    slow = client.post("/v1/emulators", json=SLOW, headers=alice).json()
    job_id = slow["status"]["job_id"]
    wait_state(client, f"/v1/emulators/{slow['id']}", alice, {"running"}, timeout=60)
    admin_page.goto(f"{service['url']}/ui/jobs")
    row = admin_page.locator(f"#job-{job_id}")
    assert "running" in row.inner_text()
    shot(admin_page, "jobs")
    row.locator("button", has_text="Cancel").click()
    admin_page.wait_for_url(f"{service['url']}/ui/jobs/{job_id}")
    deadline = time.monotonic() + 60
    while "cancelled" not in admin_page.inner_text("#job-state"):  # the page reloads itself while it runs
        assert time.monotonic() < deadline, admin_page.inner_text("#job")
        admin_page.wait_for_timeout(500)
    assert client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()["state"] == "cancelled"
    shot(admin_page, "job")


def test_a_data_owner_sees_only_its_own(playwright: Any, service: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as user_data:
        context = new_context(playwright, user_data)
        page = context.new_page()
        sign_in(page, service["url"], service["keys"]["bob"])
        assert "data owner bob" in page.inner_text("#signed-in-as")
        page.goto(f"{service['url']}/ui/emulators")
        assert service["emulator"]["id"] not in page.inner_text("main")
        response = page.goto(f"{service['url']}/ui/emulators/{service['emulator']['id']}")
        assert response.status == 404 and "not found" in page.inner_text("#error-message")
        assert page.goto(f"{service['url']}/ui/owners").status == 403
        context.close()
