"""The REST API's review queue, inspections (frames, overlays) and labels: parse the request,
call one service of :mod:`inspection.services`, render the response (see :mod:`.routes_api`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Response
from sqlalchemy.orm import Session

from inspection.api.deps import (
    Ctx,
    Operator,
    ReadSession,
    WriteSession,
)
from inspection.api.routes_api import (
    NOT_FOUND,
    IdPath,
    OptStation,
    QueueQuery,
    Since,
    Until,
    api_router,
    aware,
    tag_routers,
)
from inspection.api.schemas import (
    DefectTypeOut,
    HistoryEntryOut,
    InspectionDetailOut,
    InspectionListOut,
    LabelIn,
    LabelOut,
    OverlayScaleOut,
    OverlayStyle,
    QueueCountOut,
    QueuePageOut,
    UndoOut,
    defect_type_out,
    inspection_detail_out,
    inspection_out,
    label_out,
)
from inspection.db.models import ArtifactKind, Verdict
from inspection.services import labelling
from inspection.services import review_queue as queue_reads

review_api, inspections_api, labels_api = tag_routers("review", "inspections", "labels")


# -- review queue and inspections ----------------------------------------------------------


@dataclass(frozen=True)
class KeysetPage:
    """Which page of a keyset-paginated list: its size and the previous page's cursor."""

    limit: int
    cursor: str | None


def keyset_page(
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
) -> KeysetPage:
    """The page parameters, read after the queue's filters (their order in the API schema)."""
    return KeysetPage(limit, cursor)


@review_api.get("/review-queue", response_model=QueuePageOut)
def review_queue(
    user: Operator,
    session: ReadSession,
    queue: QueueQuery,
    page_query: Annotated[KeysetPage, Depends(keyset_page)],
) -> QueuePageOut:
    """What to review next: the parts the stations flagged and the uncertain ones just below
    their threshold (``include_passes`` adds clear passes), unknown defect types first, then by
    descending score.

    Keyset pagination: pass the previous page's ``next_cursor`` (stable while new inspections
    arrive and items are labelled).
    """
    page = queue_reads.queue_page(session, queue, limit=page_query.limit, cursor=page_query.cursor)
    return QueuePageOut(
        items=[
            inspection_out(i, page.stations.get(i.station_id), page.labels.get(i.id))
            for i in page.items
        ],
        next_cursor=page.next_cursor,
    )


@review_api.get("/review-queue/count", response_model=QueueCountOut)
def review_queue_count(user: Operator, session: ReadSession, queue: QueueQuery) -> QueueCountOut:
    """How many inspections wait in the queue with these filters (counted up to 10,000); with
    the default filters, the overview's "flagged, not reviewed"."""
    count, capped = queue_reads.queue_count(session, queue)
    return QueueCountOut(count=count, capped=capped)


@inspections_api.get("/inspections", response_model=InspectionListOut)
def list_inspections(
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    verdict: Verdict | None = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> InspectionListOut:
    """Inspections newest first, with offset pagination and the total count."""
    items, total = queue_reads.inspections_page(
        session,
        station_id=station_id,
        verdict=verdict,
        since=aware(since),
        until=aware(until),
        limit=limit,
        offset=offset,
    )
    stations = queue_reads.stations_by_id(session)
    labels = queue_reads.latest_labels(session, [i.id for i in items])
    return InspectionListOut(
        items=[inspection_out(i, stations.get(i.station_id), labels.get(i.id)) for i in items],
        total=total,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if offset + limit < total else None,
    )


def inspection_detail(session: Session, inspection_id: int) -> InspectionDetailOut:
    """Everything the detail page and ``GET /api/inspections/{id}`` show."""
    return inspection_detail_out(queue_reads.inspection_detail(session, inspection_id))


@inspections_api.get(
    "/inspections/{inspection_id}", response_model=InspectionDetailOut, responses=NOT_FOUND
)
def get_inspection(
    inspection_id: IdPath, user: Operator, session: ReadSession
) -> InspectionDetailOut:
    """One inspection with regions, every label, labelling history and its model version."""
    return inspection_detail(session, inspection_id)


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The image."},
    **NOT_FOUND,
}


@inspections_api.get(
    "/inspections/{inspection_id}/frame", response_class=Response, responses=IMAGE_RESPONSES
)
def frame(
    inspection_id: IdPath,
    user: Operator,
    ctx: Ctx,
    session: ReadSession,
    max_side: Annotated[
        int | None, Query(ge=16, le=4096, description="Thumbnail: longest side in pixels.")
    ] = None,
) -> Response:
    """The captured frame (``max_side``: a JPEG thumbnail)."""
    artifact = queue_reads.image_artifact(session, inspection_id, ArtifactKind.FRAME)
    session.close()  # release the connection before file I/O
    image = (
        ctx.images.thumbnail(artifact.store_key, max_side)
        if max_side is not None
        else ctx.images.frame(artifact.store_key)
    )
    return Response(
        image.data,
        media_type=image.media_type,
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{artifact.sha256}"'},
    )


@inspections_api.get(
    "/inspections/{inspection_id}/overlay.png", response_class=Response, responses=IMAGE_RESPONSES
)
def overlay(
    inspection_id: IdPath,
    user: Operator,
    ctx: Ctx,
    session: ReadSession,
    style: Annotated[
        OverlayStyle,
        Query(description="heat: the coloured map; contour: isolines only (defect stays visible)."),
    ] = "heat",
) -> Response:
    """The anomaly heatmap as a transparent PNG the size of the frame (colour scale: see
    ``overlay-scale``)."""
    source = queue_reads.heatmap_source(session, inspection_id)
    session.close()  # release the connection before file I/O
    image = ctx.images.overlay(
        source.store_key,
        size=source.frame_size,
        pixel_threshold=source.pixel_threshold,
        style=style,
    )
    return Response(
        image.data,
        media_type=image.media_type,
        headers={"Cache-Control": "private, max-age=3600"},
    )


@inspections_api.get(
    "/inspections/{inspection_id}/overlay-scale",
    response_model=OverlayScaleOut,
    responses=NOT_FOUND,
)
def overlay_scale(
    inspection_id: IdPath, user: Operator, ctx: Ctx, session: ReadSession
) -> OverlayScaleOut:
    """The overlay's colour scale in the heatmap's units (per-pixel anomaly score): the value
    drawn transparent, the value drawn hottest, and the contour levels."""
    source = queue_reads.heatmap_source(session, inspection_id)
    session.close()  # release the connection before file I/O
    scale = ctx.images.overlay_scale(source.store_key, pixel_threshold=source.pixel_threshold)
    return OverlayScaleOut(
        vmin=scale.vmin,
        vmax=scale.vmax,
        levels=list(scale.levels),
        pixel_threshold=scale.pixel_threshold,
        units="per-pixel anomaly score (detector units, as the pixel threshold)",
    )


@labels_api.get(
    "/inspections/{inspection_id}/labels", response_model=list[LabelOut], responses=NOT_FOUND
)
def list_labels(inspection_id: IdPath, user: Operator, session: ReadSession) -> list[LabelOut]:
    """Every label of the inspection, oldest first."""
    return [label_out(x) for x in queue_reads.label_rows(session, inspection_id=inspection_id)]


@labels_api.get(
    "/inspections/{inspection_id}/history",
    response_model=list[HistoryEntryOut],
    responses=NOT_FOUND,
)
def history(inspection_id: IdPath, user: Operator, session: ReadSession) -> list[HistoryEntryOut]:
    """Labels added and undone on the inspection, newest first (from the audit log)."""
    return [
        HistoryEntryOut.model_validate(h)
        for h in queue_reads.inspection_history(session, inspection_id=inspection_id)
    ]


@labels_api.post(
    "/inspections/{inspection_id}/labels",
    status_code=201,
    response_model=LabelOut,
    responses=NOT_FOUND,
)
def add_label(
    inspection_id: IdPath, body: LabelIn, user: Operator, session: WriteSession
) -> LabelOut:
    """Label an inspection: ``pass`` (OK) or ``fail`` with a defect type (new names create a
    new type). Earlier labels are kept; the newest is current."""
    label = labelling.add_label(
        session,
        inspection_id=inspection_id,
        user_id=user.id,
        verdict=body.verdict,
        defect_type=body.defect_type,
        note=body.note,
    )
    return label_out(label)


@labels_api.delete(
    "/inspections/{inspection_id}/labels/latest", response_model=UndoOut, responses=NOT_FOUND
)
def undo_label(inspection_id: IdPath, user: Operator, session: WriteSession) -> UndoOut:
    """Undo your newest label on the inspection (it returns to the queue; audited)."""
    snapshot = labelling.undo_label(session, inspection_id=inspection_id, user_id=user.id)
    return UndoOut(inspection_id=inspection_id, undone=snapshot)


@labels_api.get("/defect-types", response_model=list[DefectTypeOut])
def defect_types(
    user: Operator, session: ReadSession, station_id: OptStation = None
) -> list[DefectTypeOut]:
    """Known defect types by name with their labelling keys 1-9 per station (``keys``);
    with ``station_id``, ``key`` is the key at that station and the list is in key order."""
    out = [defect_type_out(t, keys, station_id) for t, keys in labelling.defect_types(session)]
    return sorted(out, key=lambda t: (t.key is None, t.key or 0, t.name))


router = api_router(review_api, inspections_api, labels_api)
