"""Every data-access function, under the one name callers have used since the start.

The functions live in one module per aggregate (:mod:`~inspection.db.common`: audit and
lookups; :mod:`~inspection.db.plant`: lines, stations, cameras, thresholds, defect types;
:mod:`~inspection.db.users`; :mod:`~inspection.db.model_versions`; :mod:`~inspection.db.ingest`:
recording inspections; :mod:`~inspection.db.review`: reading them back, the review queue,
labels; :mod:`~inspection.db.jobs`: retraining jobs); this module only re-exports them, so
``repo.record_inspection`` and ``ingest.record_inspection`` are the same function.

Every function takes an open :class:`~sqlalchemy.orm.Session` first and keyword arguments after
it; none commits (the caller owns the transaction, e.g. with
:func:`inspection.db.engine.run_in_transaction`). Inputs with structure (regions, artifacts)
are frozen dataclasses, not dicts. Missing rows raise :class:`~inspection.errors.NotFoundError`;
illegal state changes raise :class:`~inspection.errors.InvalidStateError`.
"""

from __future__ import annotations

from inspection.db.common import (
    Actor,
    add_audited,
    audit,
    check_limit,
    get_existing,
    require_aware,
    table_counts,
    write_audit,
)
from inspection.db.ingest import (
    ArtifactData,
    InspectionData,
    RegionData,
    insert_inspections,
    insert_new_inspections,
    record_inspection,
    record_inspections,
)
from inspection.db.jobs import (
    FINAL_JOB_STATES,
    MAX_LOG_CHARS,
    add_training_items,
    claim_next_retrain_job,
    create_retrain_job,
    request_cancel,
    training_set,
    update_retrain_job,
)
from inspection.db.model_versions import (
    get_active_model,
    list_model_versions,
    register_model_version,
    set_model_status,
)
from inspection.db.plant import (
    assign_defect_key,
    defect_keys,
    get_or_create_defect_type,
    get_station,
    get_station_by_name,
    list_defect_types,
    record_config_thresholds,
    set_station_thresholds,
    upsert_camera,
    upsert_line,
    upsert_station,
)
from inspection.db.review import (
    QueueFilters,
    ReviewPage,
    add_label,
    current_labels,
    get_inspection,
    label_history,
    list_inspections,
    review_filters,
    review_queue,
)
from inspection.db.users import (
    create_user,
    get_user_by_username,
)

__all__ = [
    "Actor",
    "get_existing",
    "write_audit",
    "audit",
    "add_audited",
    "require_aware",
    "check_limit",
    "table_counts",
    "upsert_line",
    "upsert_station",
    "get_station",
    "get_station_by_name",
    "upsert_camera",
    "set_station_thresholds",
    "record_config_thresholds",
    "assign_defect_key",
    "defect_keys",
    "get_or_create_defect_type",
    "list_defect_types",
    "create_user",
    "get_user_by_username",
    "register_model_version",
    "set_model_status",
    "get_active_model",
    "list_model_versions",
    "RegionData",
    "ArtifactData",
    "InspectionData",
    "record_inspection",
    "record_inspections",
    "insert_inspections",
    "insert_new_inspections",
    "QueueFilters",
    "ReviewPage",
    "get_inspection",
    "list_inspections",
    "review_filters",
    "review_queue",
    "add_label",
    "current_labels",
    "label_history",
    "FINAL_JOB_STATES",
    "MAX_LOG_CHARS",
    "create_retrain_job",
    "add_training_items",
    "update_retrain_job",
    "request_cancel",
    "claim_next_retrain_job",
    "training_set",
]
