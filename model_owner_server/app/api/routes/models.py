"""Base models the owner serves, and the built-in evaluation tasks."""

from __future__ import annotations

from model_owner_server import base_models
from model_owner_server.app.api.deps import PrincipalDep, StateDep
from model_owner_server.app.api.routing import api_router
from shared.api import ModelInfo, TaskInfo

router = api_router(prefix="/v1", tags=["models"])


@router.get("/models", response_model=list[ModelInfo], summary="Base models served (SCALEOT_MODELS)")
def list_models(state: StateDep, _: PrincipalDep) -> list[ModelInfo]:
    out = []
    for name in state.settings.models:
        try:
            info = base_models.describe(name)
        except (OSError, ValueError) as exc:
            info = {"name": name, "kind": "local", "prepared": False, "description": f"unavailable: {exc}"}
        out.append(ModelInfo(name=str(info["name"]), kind=str(info["kind"]), prepared=bool(info["prepared"]),
                             description=str(info["description"])))
    return out


@router.get("/tasks", response_model=list[TaskInfo], summary="Built-in evaluation tasks")
def list_tasks(_: PrincipalDep) -> list[TaskInfo]:
    from shared.tasks import TASKS

    return [TaskInfo(name=t.name, kind=t.kind, description=t.description) for t in TASKS.values()]
