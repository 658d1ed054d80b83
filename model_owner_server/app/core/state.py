"""What one API process holds: settings, the database engine, the artifact store and model caches."""

from __future__ import annotations

from dataclasses import dataclass, field

from anyio import CapacityLimiter
from sqlalchemy.engine import Engine
from transformers import PreTrainedModel

from model_owner_server.app.core.key_cache import KeyCache
from model_owner_server.app.core.probe_pool import ProbePool
from model_owner_server.app.core.security import Principal
from model_owner_server.db.engine import make_engine
from model_owner_server.model_cache import BaseModelCache, LRUCache
from model_owner_server.recommendation.frontier_file import FrontierFile
from model_owner_server.serving.registry import Serving
from model_owner_server.settings import Settings
from model_owner_server.storage.base import ArtifactStore
from model_owner_server.storage.factory import make_store


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    base_models: BaseModelCache
    plugged: LRUCache[PreTrainedModel]  # adapter id -> full model with that adapter plugged in
    keys: KeyCache[Principal]  # key sha256 -> who holds it, for a few seconds
    frontiers: dict[str, FrontierFile] = field(default_factory=dict)  # model -> its frontier (SCALEOT_FRONTIERS)
    schema_revision: str | None = None  # set once the migrations ran at start-up
    _generation_slots: CapacityLimiter | None = None
    _probes: ProbePool | None = None
    _serving: Serving | None = None

    def generation_slots(self) -> CapacityLimiter:
        """At most `generation_concurrency` generations hold API threads at once; the others wait without
        one, so status reads always find a thread (made on first use, inside the event loop)."""
        if self._generation_slots is None:
            self._generation_slots = CapacityLimiter(self.settings.generation_concurrency)
        return self._generation_slots

    def probes(self) -> ProbePool:
        """Where upload probes run: `probe_concurrency` probe threads, `probe_queue` waiting uploads (made on
        first use, in the event loop, so never twice)."""
        if self._probes is None:
            self._probes = ProbePool(self.settings.probe_concurrency, self.settings.probe_queue)
        return self._probes

    def serving(self) -> Serving:
        """The shared-base serving of generation (made on first use; `plugged.discard` forgets its adapters too,
        so a dropped adapter is read from the store again on either path)."""
        if self._serving is None:
            s = self.settings
            self._serving = Serving(self.base_models.get, s.serve_device, s.serve_max_adapter_mb, s.serve_max_batch,
                                    s.serve_queue, s.serve_retry_after_s)
            self.plugged.on_discard.append(self._serving.pool.discard)
        return self._serving

    def close_serving(self) -> None:
        if self._serving is not None:
            self._serving.close()

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            engine=make_engine(settings.db_url, settings.db_busy_timeout_s),
            store=make_store(settings),
            base_models=BaseModelCache(settings.base_cache_size, settings.torch_dtype),
            plugged=LRUCache(settings.plugged_cache_size),
            keys=KeyCache(settings.auth_cache_s),
            frontiers=settings.load_frontiers(),
        )
