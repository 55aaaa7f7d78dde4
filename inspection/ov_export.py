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


# -- mixed precision: parts of a graph kept f32 under a bf16 hint --------------------------------

#: Operation types that make a graph's backbone when they see more than one channel
#: (:func:`_is_backbone`).
BACKBONE_OPS = frozenset(
    {
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "GroupConvolutionBackpropData",
    }
)
#: rt_info key of OpenVINO's keep-precision marker (``ov::disable_fp16_compression``, runtime
#: attribute ``precise`` version 0). OpenVINO's Python API has no setter for the attribute;
#: ``ov.save_model`` writes a node carrying this key with the attribute
#: ``DisablePrecisionConversion`` (OpenVINO 2026.4), which the CPU plugin reads back and honours
#: under ``INFERENCE_PRECISION_HINT`` bf16. Only a graph saved and read back is affected: marked
#: in memory and compiled directly, it runs as if unmarked.
KEEP_PRECISION_KEY = "precise_0"
#: The marker's key in the rt_info of a node read from an IR.
KEEP_PRECISION_READ_KEY = "DisablePrecisionConversion_0"
#: Parts :func:`keep_f32` can mark: ``stem`` (:func:`stem_ops`) and ``head`` (:func:`head_ops`).
F32_PARTS = ("stem", "head")
_UNMARKED = frozenset({"Parameter", "Constant", "Result"})


def _is_backbone(op: Any) -> bool:
    """A convolution over several channels (a network layer), not over one (a score map's
    smoothing, which belongs to the head: STFPM's Gaussian blur is a 1-channel convolution)."""
    if op.get_type_name() not in BACKBONE_OPS:
        return False
    channels = op.get_input_partial_shape(0)[1]
    return bool(channels.is_dynamic or channels.get_length() > 1)


def _upstream(seeds: list[Any]) -> set[int]:
    """ids of ``seeds`` and of every node they depend on."""
    seen = {id(op) for op in seeds}
    stack = list(seeds)
    while stack:
        for value in stack.pop().input_values():
            node = value.get_node()
            if id(node) not in seen:
                seen.add(id(node))
                stack.append(node)
    return seen


def head_ops(model: Any) -> list[Any]:
    """The scoring head of ``model``: every operation after the backbone, i.e. neither a
    multi-channel convolution (:data:`BACKBONE_OPS`) nor upstream of one (Parameters,
    Constants and Results excluded): distances, densities, nearest-neighbour products, score
    reductions, map upsampling and smoothing. Empty when the graph has no backbone."""
    ops = list(model.get_ordered_ops())
    seeds = [op for op in ops if _is_backbone(op)]
    if not seeds:
        return []
    upstream = _upstream(seeds)
    return [op for op in ops if id(op) not in upstream and op.get_type_name() not in _UNMARKED]


def _at_least_half(op: Any, height: int) -> bool:
    out = op.get_output_partial_shape(0)
    return bool(out.rank.is_static and out[2].is_static and 2 * out[2].get_length() >= height)


def stem_ops(model: Any) -> list[Any]:
    """The backbone's stem: its multi-channel convolutions whose output is at least half the
    input's height (before the second downsampling) and everything upstream of them (the
    input's normalisation), Parameters and Constants excluded. Empty when the input's height
    is not fixed or no convolution qualifies."""
    height = model.input(0).get_partial_shape()[2]
    if height.is_dynamic:
        return []
    ops = list(model.get_ordered_ops())
    seeds = [op for op in ops if _is_backbone(op) and _at_least_half(op, height.get_length())]
    if not seeds:
        return []
    upstream = _upstream(seeds)
    return [op for op in ops if id(op) in upstream and op.get_type_name() not in _UNMARKED]


def keep_f32(model: Any, parts: tuple[str, ...]) -> int:
    """Mark the ``parts`` of ``model`` (names in :data:`F32_PARTS`) to stay f32 under a bf16
    inference precision hint; returns how many operations were marked (0: the graph has none
    of them, nothing to split).

    Why: bf16 keeps 8 bits of mantissa. The early full-resolution layers see the image's
    fine contrast and the head subtracts nearly equal numbers (``|p|^2 - 2 p.b`` distances,
    normalised feature differences) or sums many small ones; rounded there, scores of feature
    detectors moved by 1-3 % and flipped verdicts (``bench/results/explore/mixed-precision.md``),
    while the bulk of the convolutions in between run bf16 at almost no cost to the scores.
    The marks take effect once the model is saved and read back (:data:`KEEP_PRECISION_KEY`).
    The CPU plugin (2026.4) runs marked convolutions, MatMuls, reductions and element-wise
    ops in f32; marked Pad, Pooling, Interpolate and Broadcast nodes fed in bf16 still ran bf16.
    What the marks buy is therefore measured, never assumed: :mod:`inspection.precision`
    checks the marked graph's verdicts like any other.
    """
    unknown = set(parts) - set(F32_PARTS)
    if unknown:
        raise ValueError(f"unknown graph parts {sorted(unknown)}: expected some of {F32_PARTS}")
    chosen: dict[int, Any] = {}
    for part in parts:
        for op in stem_ops(model) if part == "stem" else head_ops(model):
            chosen[id(op)] = op
    for op in chosen.values():
        op.get_rt_info()[KEEP_PRECISION_KEY] = ""
    return len(chosen)


def precision_kept(op: Any) -> bool:
    """Whether ``op`` carries the keep-precision marker (set in memory or read from an IR)."""
    rt = op.get_rt_info()
    return KEEP_PRECISION_KEY in rt or KEEP_PRECISION_READ_KEY in rt


def copy_precision_mark(source: Any, target: Any) -> None:
    """Give ``target`` the keep-precision marker of ``source``, if it has one: for passes that
    replace a marked node (:func:`inspection.runtime.put_constants_first`)."""
    rt = source.get_rt_info()
    for key in (KEEP_PRECISION_READ_KEY, KEEP_PRECISION_KEY):
        if key in rt:
            target.set_rt_info(rt[key], key)


def drop_precision_marks(model: Any) -> int:
    """Remove every keep-precision marker from ``model``; returns how many nodes had one."""
    count = 0
    for op in model.get_ops():
        rt = op.get_rt_info()
        found = False
        for key in (KEEP_PRECISION_READ_KEY, KEEP_PRECISION_KEY):
            if key in rt:
                del rt[key]
                found = True
        count += found
    return count
