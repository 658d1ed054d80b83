"""Start a worker from settings: `scaleot-server worker` (and the worker `serve` starts beside the API)."""

from __future__ import annotations

import logging

import torch

from model_owner_server.db.engine import make_engine
from model_owner_server.db.migrate import upgrade
from model_owner_server.jobs.handlers import HANDLERS
from model_owner_server.jobs.worker import Worker, WorkerServices
from model_owner_server.model_cache import BaseModelCache
from model_owner_server.settings import Settings
from model_owner_server.storage.factory import make_store
from model_owner_server.storage.scratch import sweep_at_startup


def build_worker(settings: Settings, worker_id: str | None = None) -> Worker:
    engine = make_engine(settings.db_url, settings.db_busy_timeout_s)
    upgrade(engine)
    services = WorkerServices(
        settings=settings,
        engine=engine,
        store=make_store(settings),
        base_models=BaseModelCache(settings.base_cache_size, settings.torch_dtype),
    )
    sweep_at_startup(settings.data_dir, services.store)  # what a killed worker left (a build's folder)
    return Worker(services, HANDLERS, worker_id)


def run_worker(settings: Settings, once: bool = False, threads: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if threads:
        torch.set_num_threads(threads)
    worker = build_worker(settings)
    if once:
        return worker.run_until_idle()
    worker.install_signal_handlers()
    worker.run_forever()
    return 0
