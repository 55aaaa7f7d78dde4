"""Creating a defect type as its own audited, undoable action (``POST /api/defect-types``,
``DELETE /api/defect-types/{id}``); listing them with their keys is ``GET /api/defect-types``
in :mod:`inspection.api.routes_api`. The rules live in :mod:`inspection.services.labelling`.
"""

from __future__ import annotations

from pydantic import Field

from inspection.api.deps import Operator, WriteSession
from inspection.api.routes_api import (
    CONFLICT,
    MAX_ID,
    NOT_FOUND,
    IdPath,
    actor_of,
    api_router,
    tag_routers,
)
from inspection.api.schemas import DEFECT_TYPE_PATTERN, DefectTypeOut, _In, defect_type_out
from inspection.services import labelling

(labels_api,) = tag_routers("labels")


class DefectTypeIn(_In):
    """A new defect type (stored lower-case); ``station_id``: the station whose mapping gives
    it a key (the one where it is named; other stations key it when they first label with it)."""

    name: str = Field(min_length=1, max_length=64, pattern=DEFECT_TYPE_PATTERN)
    station_id: int | None = Field(default=None, ge=1, le=MAX_ID)


@labels_api.post("/defect-types", status_code=201, response_model=DefectTypeOut, responses=CONFLICT)
def create_defect_type(body: DefectTypeIn, user: Operator, session: WriteSession) -> DefectTypeOut:
    """Create a defect type (operator; audited ``defect_type.create``). It takes the lowest
    free labelling key 1-9 at ``station_id``; the other types' keys never move."""
    created, keys = labelling.create_defect_type(
        session, name=body.name, actor=actor_of(user), station_id=body.station_id
    )
    return defect_type_out(created, keys, body.station_id)


@labels_api.delete(
    "/defect-types/{type_id}", response_model=DefectTypeOut, responses={**NOT_FOUND, **CONFLICT}
)
def delete_defect_type(type_id: IdPath, user: Operator, session: WriteSession) -> DefectTypeOut:
    """Undo the creation of a defect type nothing uses yet (operator; audited
    ``defect_type.delete``); its keys become free, the others stay."""
    gone = labelling.delete_defect_type(session, type_id=type_id, actor=actor_of(user))
    return defect_type_out(gone, {})


router = api_router(labels_api)
