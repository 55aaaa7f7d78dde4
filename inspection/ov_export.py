"""Torch modules -> OpenVINO graphs for every export (detector bundles, the typer, the loop's
embedder, the open-set features).

OpenVINO's PyTorch frontend traces the module with ``torch.jit.trace``, whose default
``check_trace`` traces and runs the module a second time only to compare the two: about 55 % of
the conversion's time (a CutPaste at 256 px: 21 s -> 9 s on the shared 2-core machine) for
the same graph and the same weights. It is turned off here; what it would catch (a trace that
depends on the input's values) the exports' own parity tests catch (torch against OpenVINO on
the same images), and tracing is warning-free (``tests/detectors/test_trace_warnings.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def to_openvino(module: torch.nn.Module, example: torch.Tensor, **convert: Any) -> Any:
    """The OpenVINO ``Model`` of ``module`` traced on ``example`` (N, 3, S, S), without the
    tracer's second run; ``convert``: further ``openvino.convert_model`` options (``input``)."""
    import openvino as ov
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    decoder = TorchScriptPythonDecoder(
        module, example_input=example, trace_kwargs={"check_trace": False}
    )
    return ov.convert_model(decoder, **convert)
