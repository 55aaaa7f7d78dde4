"""The detector registry: explicit key -> module, imported only when asked for.

Each module defines its config (a pydantic model with a ``type`` literal equal to the key), its
detector class and ``DETECTOR = <class>``. Adding a detector means adding one line here.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from inspection.detectors.base import Detector, DetectorConfig
from inspection.errors import UnknownDetectorError

#: Registry key -> module path. Order is the order benchmarks report.
REGISTRY: dict[str, str] = {
    "padim": "inspection.detectors.padim",
    "patchcore": "inspection.detectors.patchcore",
    "stfpm": "inspection.detectors.stfpm",
    "cutpaste": "inspection.detectors.cutpaste",
    "memae": "inspection.detectors.memae",
    "memae_feat": "inspection.detectors.memae_feat",
    "ocgan": "inspection.detectors.ocgan",
    "mkd": "inspection.detectors.mkd",
    "ganomaly": "inspection.detectors.ganomaly",
}


def keys() -> list[str]:
    """Every registered detector key."""
    return list(REGISTRY)


def get(key: str) -> type[Detector]:
    """The detector class registered under ``key``."""
    try:
        module_path = REGISTRY[key]
    except KeyError:
        raise UnknownDetectorError(
            f"unknown detector {key!r}; registered: {', '.join(REGISTRY)}"
        ) from None
    cls: type[Detector] = importlib.import_module(module_path).DETECTOR
    if cls.key != key:
        raise UnknownDetectorError(f"module {module_path} registers {cls.key!r}, expected {key!r}")
    return cls


@cache
def config_adapter() -> TypeAdapter[Any]:
    """Validator for the discriminated union of every detector's config (on ``type``)."""
    configs = tuple(get(k).Config for k in REGISTRY)
    union = Annotated[Union[configs], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(union)


def parse_config(data: dict[str, Any]) -> DetectorConfig:
    """Validate a detector config mapping; the ``type`` field picks the detector."""
    if "type" not in data:
        raise UnknownDetectorError(
            f"detector config needs a 'type' field, one of: {', '.join(REGISTRY)}"
        )
    if data["type"] not in REGISTRY:
        raise UnknownDetectorError(
            f"unknown detector {data['type']!r}; registered: {', '.join(REGISTRY)}"
        )
    config: DetectorConfig = config_adapter().validate_python(data)
    return config


def create(config: DetectorConfig | dict[str, Any] | str) -> Detector:
    """Build an unfitted detector from a key, a config mapping or a config object."""
    if isinstance(config, str):
        return get(config)()
    if isinstance(config, dict):
        config = parse_config(config)
    return get(config.type)(config)
