"""Config selects the method by a discriminated union and rejects unknown fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inspection.errors import ConfigError
from inspection.openset.config import (
    METHODS,
    EnergyConfig,
    OpenMaxConfig,
    TyperConfig,
    method_config,
)


def test_method_is_selected_by_discriminator() -> None:
    cfg = TyperConfig.model_validate({"method": {"method": "energy", "temperature": 2.0}})
    assert isinstance(cfg.method, EnergyConfig)
    assert cfg.method.temperature == 2.0
    again = TyperConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert isinstance(method_config("openmax"), OpenMaxConfig)
    assert [method_config(m).method for m in METHODS] == list(METHODS)


def test_extra_fields_and_unknown_methods_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TyperConfig.model_validate({"method": {"method": "msp", "temperature": 1.0}})
    with pytest.raises(ValidationError):
        TyperConfig.model_validate({"method": {"method": "odin"}})
    with pytest.raises(ValidationError):
        TyperConfig.model_validate({"threshold": 3})
    with pytest.raises(ConfigError):
        method_config("odin")
