"""Base models the owner serves, and the built-in evaluation tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, status

from model_owner_server import base_models
from model_owner_server.app.api.deps import PrincipalDep, StateDep
from model_owner_server.app.api.routing import api_router
from model_owner_server.recommendation.rule import NoRecommendationError, recommended_point, selection_caveat
from shared.api import DialRecommendation, GapEstimate, ModelInfo, TaskInfo

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


@router.get("/models/{name:path}/recommendation", response_model=DialRecommendation,
            summary="The (alpha, beta) to request for a wanted privacy gap, from the owner's measured frontier",
            responses={404: {"description": "model not served, or no frontier measured for it"},
                       422: {"description": "no measured (alpha, beta) reaches that privacy gap (the message says "
                                            "the largest measured)"}})
def recommendation(
    name: str, state: StateDep, _: PrincipalDep,
    privacy_gap: Annotated[float, Query(ge=-100, le=100, description="wanted privacy gap (plug-in minus emulator "
                                        "fine-tuned accuracy), points")],
    conservative: Annotated[bool, Query(description="ask the CI's lower end, not the mean, to reach the gap")] = False,
) -> DialRecommendation:
    if name not in state.settings.models:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {name!r} is not served; GET /v1/models lists them")
    frontier = state.frontiers.get(name)
    if frontier is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no privacy-utility frontier measured for {name!r}: the model owner runs `scaleot-server "
                            f"bench frontier --model {name}` and names its JSON in SCALEOT_FRONTIERS")
    try:
        point = recommended_point(frontier, privacy_gap, conservative=conservative)
    except NoRecommendationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    assert point.privacy_gap is not None and point.utility_gap is not None  # the rule picks measured points only
    return DialRecommendation(
        model=name, wanted_privacy_gap=privacy_gap, conservative=conservative, method=point.method,
        alpha=point.alpha, beta=point.beta, adapter_bottom=frontier.adapter.bottom, adapter_top=frontier.adapter.top,
        privacy_gap=GapEstimate.model_validate(point.privacy_gap.model_dump()),
        utility_gap=GapEstimate.model_validate(point.utility_gap.model_dump()),
        plug_in=point.plug_in.mean if point.plug_in else None, tasks=list(frontier.tasks),
        learning_rates=dict(frontier.learning_rates),
        caveat=selection_caveat(frontier))


@router.get("/tasks", response_model=list[TaskInfo], summary="Built-in evaluation tasks")
def list_tasks(_: PrincipalDep) -> list[TaskInfo]:
    from shared.tasks import TASKS

    return [TaskInfo(name=t.name, kind=t.kind, description=t.description) for t in TASKS.values()]
