"""The schema is owned by Alembic revisions: a fresh database is upgraded to head at start-up, the
revisions match the SQLModel tables exactly, and downgrade/upgrade round-trips."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import model_owner_server.db.models  # noqa: F401
from model_owner_server.db.engine import is_sqlite, make_engine
from model_owner_server.db.migrate import alembic_config, current_revision, head_revision, upgrade
from tests.service.conftest import make_settings


def test_fresh_database_is_migrated_and_matches_the_models(tmp_path: Path) -> None:
    url = make_settings(tmp_path).db_url  # Postgres when the test run has one (.ci/run), else SQLite
    engine = make_engine(url)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision() == "0003"
    assert upgrade(engine) == "0003"  # idempotent: a second process finds it done
    with engine.connect() as connection:
        if is_sqlite(url):
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a revision: {diff}"
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert upgrade(engine) == "0003"
    assert {"owner", "api_key", "job", "emulator", "emulator_grant", "adapter", "evaluation", "agreement_check",
            "prompt_set"} <= set(inspect(engine).get_table_names())


def test_processes_starting_at_once_upgrade_a_fresh_database_once(tmp_path: Path) -> None:
    """API replicas and workers all run `upgrade` at start-up; the lock makes one do it, the rest find it done."""
    url = make_settings(tmp_path).db_url
    engines = [make_engine(url) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        revisions = list(pool.map(upgrade, engines))
    assert revisions == ["0003"] * 6
    with engines[0].connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    for engine in engines:
        engine.dispose()


def test_revision_0003_upgrades_a_database_with_data(tmp_path: Path) -> None:
    """An 0002 database with an owner, a build and a prompt set: upgraded, its rows keep their values and get the
    new columns empty (no plan known, no owner on the job, 0 bytes counted)."""
    engine = make_engine(make_settings(tmp_path).db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    with engine.begin() as connection:
        run = connection.exec_driver_sql
        run("INSERT INTO owner (id, name, created_at) VALUES ('own-1', 'alice', 1.0)")
        run("INSERT INTO job (id, kind, subject_id, state, progress, message, attempts, max_attempts, "
            "cancel_requested, created_at, updated_at) VALUES ('job-1', 'emulator_build', 'emu-1', 'succeeded', "
            "1.0, '', 1, 2, false, 1.0, 1.0)")
        run("INSERT INTO emulator (id, base_model, method, spec_json, job_id, created_at) "
            "VALUES ('emu-1', 'tiny-gpt2', 'uniform', '{}', 'job-1', 1.0)")
        run("INSERT INTO prompt_set (id, owner_id, sha256, n_prompts, created_at) "
            "VALUES ('pset-1', 'own-1', 'ab', 8, 1.0)")
    assert upgrade(engine) == "0003"
    with engine.connect() as connection:
        run = connection.exec_driver_sql
        assert run("SELECT id, owner_id FROM job").all() == [("job-1", None)]
        assert run("SELECT id, job_id, plan_sha256 FROM emulator").all() == [("emu-1", "job-1", None)]
        assert run("SELECT id, n_prompts, stored_bytes FROM prompt_set").all() == [("pset-1", 8, 0)]
    engine.dispose()
