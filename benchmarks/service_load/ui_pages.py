"""Server time of each dashboard page with 1,000 jobs and 1,000 adapters in the database (`bench ui-pages`).

The app runs in-process on a new SQLite database (no worker thread). Through the public API it gets a
data owner, one built tiny-gpt2 emulator, one uploaded full-block adapter and one finished evaluation
(so the manifest, the adapter's files and the evaluation's matrix are real); then rows are added through
the SQLModel tables around them: 1,000 jobs of every kind and state, the emulators, agreement checks and
evaluations those jobs build and run, and 1,000 adapters. Built emulators are copies of the real one, its
files copied under each id (the pages check a built emulator's stored files). Ten data owners hold the
objects, the signed-in one about half of them.

Each page is then requested through ASGI one request at a time, the pages alternating, as the admin and
as the data owner; the time of one request is the wall time from the call into the app to its last
message (routing, the session, the queries, the template), so the network and the client are not in it.
The number of SQL statements each page issues is counted too (an N+1 query shows there first).
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

TARGET_MS = 100.0
SPEC = {"base_model": "tiny-gpt2", "method": "uniform", "alpha": 0.5, "beta": 0.5, "adapter_bottom": 1,
        "adapter_top": 1}
TASKS = ("winowhy", "arithmetic", "sciq", "piqa", "hellaswag")
OWNERS = 10  # data owners; the first is the one signed in
MC = "\n".join(json.dumps({"context": f"Q{i}: the sky is", "choices": [" blue", " green"], "label": i % 2})
               for i in range(8)).encode()
# the state of the i-th seeded job, cycling: mostly finished, some queued and running (the jobs page reloads
# itself while one is live), failures for the overview
STATES = ("succeeded",) * 14 + ("failed",) * 2 + ("queued",) * 2 + ("running", "cancelled")


def _frontier_file(path: Path, model: str) -> Path:
    def point(alpha: float, beta: float, privacy: float, utility: float) -> dict[str, object]:
        return {"variant": f"a{alpha}-b{beta}", "method": "scaleot", "alpha": alpha, "beta": beta,
                "privacy_gap": {"mean": privacy, "ci95": [privacy - 1.5, privacy + 1.5]},
                "utility_gap": {"mean": utility, "ci95": [utility - 1.0, utility + 1.0]}, "plug_in": {"mean": 61.0}}

    points = [point(0.25, 0.0, 2.0, 0.5), point(0.5, 0.0, 5.0, 1.0), point(0.75, 0.5, 9.0, 3.0)]
    path.write_text(json.dumps({"benchmark": "frontier", "model": model, "tasks": ["winowhy"], "points": points}))
    return path


def _adapter_file(emulator_dir: Path, out_dir: Path) -> Path:
    """A full-block adapter for the emulator: its adapter blocks slightly perturbed (as the tests make one)."""
    import torch

    from model_owner_server.adapter_checks import expected_full_tensors
    from model_owner_server.base_models import load_base_model
    from shared.adapter_format import save_adapter
    from shared.artifacts import read_manifest

    manifest = read_manifest(emulator_dir)
    base = load_base_model(manifest.base_model)
    original = base.model.state_dict()
    generator = torch.Generator().manual_seed(1)
    state = {k: original[k] + 0.05 * torch.randn(original[k].shape, generator=generator)
             for k in expected_full_tensors(base, manifest)}
    return save_adapter(state, manifest, out_dir)


def _sign_in(client: Any, key: str) -> str:
    """The session cookie of `key`, signed in through the form."""
    from model_owner_server.app.ui.session import SESSION_COOKIE

    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if csrf is None:
        raise RuntimeError(f"no CSRF token on the sign-in page ({form.status_code})")
    answer = client.post("/ui/login", data={"key": key, "csrf": csrf.group(1)}, follow_redirects=False)
    cookie = client.cookies.get(SESSION_COOKIE)
    if answer.status_code != 303 or not cookie:
        raise RuntimeError(f"sign-in answered {answer.status_code}")
    client.cookies.clear()
    return str(cookie)


def _real_objects(client: Any, settings: Any, admin: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Through the API: the data owners, one built emulator, one adapter, one finished evaluation."""
    from model_owner_server.jobs.runner import build_worker
    from model_owner_server.storage.keys import emulator_prefix

    keys = [client.post("/v1/owners", json={"name": f"owner-{i:02d}"}, headers=admin).raise_for_status()
            .json()["api_key"] for i in range(OWNERS)]
    owner = {"Authorization": f"Bearer {keys[0]}"}
    worker = build_worker(settings, worker_id="bench-worker")
    emulator_id = client.post("/v1/emulators", json=SPEC, headers=owner).raise_for_status().json()["id"]
    worker.run_until_idle()
    emulator = client.get(f"/v1/emulators/{emulator_id}", headers=owner).json()
    if emulator["state"] != "succeeded":
        raise RuntimeError(f"the bench emulator did not build: {emulator['status']}")
    store = client.app.state.scaleot.store
    adapter_file = _adapter_file(store.local_dir(emulator_prefix(emulator_id)), tmp / "adapter")
    upload = client.post("/v1/adapters", data={"emulator_id": emulator_id}, headers=owner, files=[
        ("file", ("adapter.safetensors", adapter_file.read_bytes(),
                  "application/octet-stream"))])
    if upload.status_code != 201:
        raise RuntimeError(f"the bench adapter was refused: {upload.text[:400]}")
    adapter_id = upload.json()["id"]
    evaluation_id = client.post("/v1/evaluations", data={"adapter_id": adapter_id, "task": TASKS[0]},
                                files={"file": ("mc.jsonl", MC)}, headers=owner).raise_for_status().json()["id"]
    worker.run_until_idle()
    evaluation = client.get(f"/v1/evaluations/{evaluation_id}", headers=owner).json()
    if evaluation["state"] != "succeeded":
        raise RuntimeError(f"the bench evaluation did not finish: {evaluation['status']}")
    return {"keys": keys, "emulator_id": emulator_id, "adapter_id": adapter_id, "evaluation_id": evaluation_id}


def _seed(state: Any, real: dict[str, Any], n_jobs: int, n_adapters: int) -> dict[str, Any]:
    """Rows around the real objects: `n_jobs` jobs (a tenth emulator builds, a twentieth agreement checks, the
    rest evaluations), their emulators, checks and evaluations, and `n_adapters` adapters."""
    from sqlmodel import Session, select

    from model_owner_server.db.models import (
        Adapter,
        AgreementCheck,
        Emulator,
        EmulatorGrant,
        Evaluation,
        Job,
        JobKind,
        Owner,
    )
    from model_owner_server.storage.keys import emulator_prefix

    rng_hex = secrets.token_hex
    now = time.time()
    with Session(state.engine) as db:
        owners = list(db.exec(select(Owner).order_by(Owner.name)).all())
        real_emulator = db.get(Emulator, real["emulator_id"])
        real_adapter = db.get(Adapter, real["adapter_id"])
        real_evaluation = db.get(Evaluation, real["evaluation_id"])
        assert real_emulator and real_adapter and real_evaluation
        manifest_json, spec_json = real_emulator.manifest_json, real_emulator.spec_json
        full_files, result_json = real_adapter.files_json, real_evaluation.result_json
    lora_files = json.dumps({"adapter_model.safetensors": {"sha256": "ab" * 32, "size": 52_000},
                             "adapter_config.json": {"sha256": "cd" * 32, "size": 700}})
    source_dir = state.store.local_dir(emulator_prefix(real["emulator_id"]))

    n_builds, n_checks = n_jobs // 10, n_jobs // 20
    n_evals = n_jobs - n_builds - n_checks
    jobs: list[Job] = []

    def job(kind: str, subject_id: str, i: int, owner_id: str | None) -> Job:
        state_of = STATES[i % len(STATES)]
        created = now - 86_400 + 80 * len(jobs)
        started = created + 5 if state_of != "queued" else None
        finished = created + 65 if state_of in ("succeeded", "failed", "cancelled") else None
        row = Job(id=f"job-{rng_hex(8)}", kind=kind, subject_id=subject_id, owner_id=owner_id, state=state_of,
                  progress=1.0 if state_of == "succeeded" else (0.4 if state_of == "running" else 0.0),
                  message={"running": "step 12/30", "succeeded": "done"}.get(state_of, ""),
                  error="RuntimeError: the bench says so" if state_of == "failed" else None,
                  attempts=0 if state_of == "queued" else 1,
                  lease_owner=f"worker-{i % 3}" if state_of == "running" else None,
                  lease_expires_at=now + 3600 if state_of == "running" else None,
                  created_at=created, started_at=started, finished_at=finished, updated_at=finished or created)
        jobs.append(row)
        return row

    emulators: list[Emulator] = []
    grants: list[EmulatorGrant] = []
    built: list[Emulator] = [real_emulator]
    for i in range(n_builds):
        owner = owners[i % OWNERS]
        emulator_id = f"emu-{rng_hex(8)}"
        build = job(JobKind.emulator_build, emulator_id, i, owner.id)
        succeeded = build.state == "succeeded"
        row = Emulator(id=emulator_id, base_model="tiny-gpt2", method="uniform",
                       spec_json=spec_json.replace('"alpha": 0.5', f'"alpha": {0.3 + i / 1000:.4f}'),
                       job_id=build.id, manifest_json=manifest_json if succeeded else None,
                       created_at=build.created_at)
        emulators.append(row)
        grants.append(EmulatorGrant(emulator_id=emulator_id, owner_id=owner.id))
        if i % 2 and i % OWNERS != 0:  # the signed-in owner requested about half the emulators
            grants.append(EmulatorGrant(emulator_id=emulator_id, owner_id=owners[0].id))
        if succeeded:
            state.store.put_dir(emulator_prefix(emulator_id), source_dir)  # its files, as a build leaves them
            built.append(row)
    adapters: list[Adapter] = []
    for i in range(n_adapters):
        emulator = built[0] if i % 4 == 0 else built[i % len(built)]  # a quarter on the real emulator
        lora = i % 3 == 2
        adapters.append(Adapter(id=f"ada-{rng_hex(8)}", owner_id=owners[0 if i % 2 == 0 else i % OWNERS].id,
                                emulator_id=emulator.id, kind="lora" if lora else "full",
                                files_json=lora_files if lora else full_files, size=52_700 if lora else 480_000,
                                created_at=now - 86_400 + 86 * i))
    evaluations: list[Evaluation] = []
    for i in range(n_evals):
        adapter = adapters[0] if i % 25 == 0 else adapters[i % len(adapters)]  # some adapters have many
        evaluation_id = f"eva-{rng_hex(8)}"
        run = job(JobKind.evaluation, evaluation_id, i, adapter.owner_id)
        evaluations.append(Evaluation(id=evaluation_id, owner_id=adapter.owner_id, adapter_id=adapter.id,
                                      task=TASKS[i % len(TASKS)], source="upload" if i % 7 == 0 else "builtin",
                                      example_limit=200, job_id=run.id, created_at=run.created_at,
                                      result_json=result_json if run.state == "succeeded" else None))
    checks: list[AgreementCheck] = []
    for i in range(n_checks):
        emulator = built[i % len(built)]
        check_id = f"agr-{rng_hex(8)}"
        run = job(JobKind.agreement_check, check_id, i, owners[i % OWNERS].id)
        checks.append(AgreementCheck(id=check_id, owner_id=owners[i % OWNERS].id, emulator_id=emulator.id,
                                     n_prompts=64, prompts_sha256="ef" * 32, job_id=run.id, created_at=run.created_at))
    with Session(state.engine, expire_on_commit=False) as db:
        db.add_all(jobs)
        db.flush()
        db.add_all(emulators)
        db.flush()
        db.add_all([*grants, *adapters])
        db.flush()
        db.add_all([*evaluations, *checks])
        db.commit()
    return {"owner_id": owners[0].id, "first_adapter": adapters[0].id,
            "job": next(j.id for j in jobs if j.state == "running" and j.kind == JobKind.evaluation
                        and j.owner_id == owners[0].id)}


def _counts(engine: Any) -> dict[str, int]:
    from sqlmodel import Session, func, select

    from model_owner_server.db.models import Adapter, AgreementCheck, Emulator, Evaluation, Job, Owner

    with Session(engine) as db:
        return {model.__name__.lower() + "s": int(db.exec(select(func.count()).select_from(model)).one())
                for model in (Job, Adapter, Emulator, Evaluation, AgreementCheck, Owner)}


def _pages(real: dict[str, Any], seeded: dict[str, Any], admin: bool) -> dict[str, str]:
    pages = {"overview": "/ui", "jobs": "/ui/jobs", "job": f"/ui/jobs/{seeded['job']}",
             "emulators": "/ui/emulators", "emulator": f"/ui/emulators/{real['emulator_id']}",
             "adapters": "/ui/adapters", "adapter": f"/ui/adapters/{seeded['first_adapter']}",
             "evaluations": "/ui/evaluations", "evaluation": f"/ui/evaluations/{real['evaluation_id']}",
             "frontier": "/ui/frontier?model=tiny-gpt2&privacy_gap=6", "owners": "/ui/owners"}
    if not admin:
        del pages["owners"]  # the admin's page (a data owner gets a 403 page)
    return pages


async def _get(app: FastAPI, target: str, cookie: str) -> tuple[int, int]:
    path, _, query = target.partition("?")
    sent: list[MutableMapping[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "headers": [(b"host", b"bench"), (b"cookie", f"scaleot_ui={cookie}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "state": {}}

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = sum(len(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")
    return int(sent[0]["status"]), body


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _measure(app: FastAPI, engine: Any, viewers: dict[str, tuple[str, dict[str, str]]],
                   requests: int) -> list[dict[str, Any]]:
    from sqlalchemy import event

    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    queries: dict[tuple[str, str], int] = {}
    sizes: dict[tuple[str, str], int] = {}
    try:
        for viewer, (cookie, pages) in viewers.items():  # warm-up: templates compiled, statements cached
            for target in pages.values():
                for _ in range(3):
                    status, _ = await _get(app, target, cookie)
                    if status != 200:
                        raise RuntimeError(f"GET {target} as {viewer} answered {status}")
        for _ in range(requests):
            for viewer, (cookie, pages) in viewers.items():
                for name, target in pages.items():
                    before = statements[0]
                    started, started_cpu = time.perf_counter(), time.process_time()
                    status, size = await _get(app, target, cookie)
                    wall.setdefault((viewer, name), []).append(1e3 * (time.perf_counter() - started))
                    cpu.setdefault((viewer, name), []).append(1e3 * (time.process_time() - started_cpu))
                    queries[(viewer, name)] = statements[0] - before
                    sizes[(viewer, name)] = size
                    if status != 200:
                        raise RuntimeError(f"GET {target} as {viewer} answered {status}")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    rows = []
    for viewer, (_, pages) in viewers.items():
        for name, target in pages.items():
            times = wall[(viewer, name)]
            rows.append({"viewer": viewer, "page": name, "path": target.split("?")[0],
                         "median_ms": statistics.median(times), "p95_ms": _percentile(times, 0.95),
                         "max_ms": max(times), "cpu_median_ms": statistics.median(cpu[(viewer, name)]),
                         "sql_statements": queries[(viewer, name)], "html_bytes": sizes[(viewer, name)],
                         "under_target": _percentile(times, 0.95) < TARGET_MS})
    return rows


def run(requests: int = 30, n_jobs: int = 1000, n_adapters: int = 1000, note: str = "") -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from model_owner_server.app.main import create_app
    from model_owner_server.settings import Settings

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scaleot-ui-pages-") as tmp_name:
        tmp = Path(tmp_name)
        admin_key = secrets.token_urlsafe(24)
        settings = Settings(data_dir=tmp / "data", admin_key=admin_key, models=["tiny-gpt2", "tiny-llama"],
                            workers_with_serve=0, eval_limit=8, quota_active_jobs=0, quota_builds_per_day=0,
                            quota_stored_mb=0, frontiers={"tiny-gpt2": _frontier_file(tmp / "f.json", "tiny-gpt2")})
        app = create_app(settings)
        with TestClient(app) as client:
            admin = {"Authorization": f"Bearer {admin_key}"}
            real = _real_objects(client, settings, admin, tmp)
            state = app.state.scaleot
            seeded = _seed(state, real, n_jobs, n_adapters)
            counts = _counts(state.engine)
            viewers = {"admin": (_sign_in(client, admin_key), _pages(real, seeded, admin=True)),
                       "data owner": (_sign_in(client, real["keys"][0]), _pages(real, seeded, admin=False))}
            seeded_s = time.perf_counter() - started
            rows = client.portal.call(_measure, app, state.engine, viewers, requests)  # type: ignore[union-attr]
    return {"benchmark": "ui-pages", "database": "sqlite (a file in a temporary directory)", "counts": counts,
            "seeded": {"jobs": n_jobs, "adapters": n_adapters, "owners": OWNERS, "tasks": list(TASKS)},
            "requests_per_page": requests, "target_ms": TARGET_MS, "rows": rows,
            "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                     "cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
            "setup_s": round(seeded_s, 1), "wall_s": round(time.perf_counter() - started, 1), "note": note,
            "method": "in-process ASGI, one request at a time, the pages alternating; wall time from the call "
                      "into the app to its last message (no network, no client)"}


def markdown(result: dict[str, Any]) -> str:
    c = result["counts"]
    host = result["host"]
    before = {(r["viewer"], r["page"]): r for r in (result.get("before") or {}).get("rows", [])}
    lines = [
        f"Dashboard page server time, {result['database']}: {c['jobs']} jobs, {c['adapters']} adapters, "
        f"{c['emulators']} emulators, {c['evaluations']} evaluations, {c['agreementchecks']} agreement checks, "
        f"{c['owners']} data owners; {result['requests_per_page']} requests per page and viewer, the pages "
        f"alternating; target: under {result['target_ms']:.0f} ms a page.", "",
        f"Host: {host['processor']}, {host['cpus']} CPUs, Python {host['python']}, {host['system']}.", "",
        "| viewer | page | path | median ms | p95 ms | max ms | CPU median ms | SQL statements | HTML KB | "
        "p95 < 100 ms |" + (" before: median / p95 / CPU ms, SQL |" if before else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if before else "")]
    for row in result["rows"]:
        was = before.get((row["viewer"], row["page"]))
        then = (f" {was['median_ms']:.1f} / {was['p95_ms']:.1f} / {was['cpu_median_ms']:.1f}, {was['sql_statements']} |"
                if was else " — |"
                ) if before else ""
        lines.append(f"| {row['viewer']} | {row['page']} | `{row['path']}` | {row['median_ms']:.1f} | "
                     f"{row['p95_ms']:.1f} | {row['max_ms']:.1f} | {row['cpu_median_ms']:.1f} | "
                     f"{row['sql_statements']} | {row['html_bytes'] / 1000:.0f} | "
                     f"{'yes' if row['under_target'] else '**no**'} |{then}")
    lines += ["", f"Method: {result['method']}. CPU is the process's CPU time over the request (all its threads)."]
    if before:
        lines += ["", f"Before: {result['before'].get('label') or 'the earlier run'} (same seed sizes, same host)."]
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"
