"""Third-party warnings that a normal run would print but that say nothing to an operator.

Each filter is narrow (one message, one category, where possible one module) and documented
with why it is harmless here, so a new or different warning from the same library still shows.
:func:`quiet_third_party` is called by the CLI entry point and the bootstrap subprocess, never at
import time.
"""

from __future__ import annotations

import logging
import re
import warnings

#: (message regex, category name, module regex): warnings this package silences.
_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    # anomalib 2.7 imports timm.models.layers (moved to timm.layers in timm 0.9); the names it
    # uses still resolve. Nothing for a user to change.
    (r"Importing from timm\.models\.layers is deprecated", FutureWarning, ""),
    # anomalib's package import touches its deprecated dinov2 components; we never use them.
    (r"The anomalib\.models\.components\.dinov2 package is deprecated", FutureWarning, ""),
    # Export traces the graph with torch.jit.trace (OpenVINO's converter takes the traced
    # module); torch 2.14 marks tracing as deprecated in favour of torch.export.
    (r"`torch\.jit\.trace(_method)?` is deprecated", FutureWarning, ""),
    # Detectors that still turn tensor shapes into Python ints while traced (the input size is
    # fixed per exported bundle, so the constant is right). PaDiM's and the shared map blur's
    # resize matrices read shapes through _common.static_dims (tests/detectors/test_trace_warnings.py).
    (r"Converting a tensor to a Python (integer|float|boolean)", Warning, r"inspection\.detectors"),
)

#: Head layers that timm reports as "Unexpected keys" when a classification checkpoint is loaded
#: into a feature extractor (``features_only``): expected, since a feature extractor has no head.
_HEAD_KEY = re.compile(r"^(classifier|conv_head|bn2)\.\w+$")


class _ExpectedHeadKeys(logging.Filter):
    """Drops timm's "Unexpected keys (...)" record when every key belongs to the classifier head."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = re.match(r"Unexpected keys \((.*?)\) found while loading pretrained", message)
        if match is None:
            return True
        keys = [k.strip() for k in match.group(1).split(",")]
        return not all(_HEAD_KEY.match(k) for k in keys)


_head_filter = _ExpectedHeadKeys()


def quiet_third_party() -> None:
    """Install the warning filters above and timm's head-keys log filter (idempotent)."""
    for message, category, module in _FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    timm_logger = logging.getLogger("timm.models._builder")
    if _head_filter not in timm_logger.filters:
        timm_logger.addFilter(_head_filter)
