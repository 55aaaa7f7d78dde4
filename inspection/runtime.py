"""Deployed-model runtime for the station hot path: OpenVINO + OpenCV + NumPy only.

Imports no torch and no anomalib. A bundle directory holds ``model.xml``/``model.bin`` (the
deployable graph: normalisation inside, raw [0, 1] RGB NCHW in, score (N,) and anomaly map
(N, 1, S, S) out) and ``model.json`` (input contract and calibration). ``input.fit`` says how a
frame becomes the square input (:mod:`inspection.geometry`: ``stretch`` resizes, ``pad``
letterboxes; bundles without it stretch).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from inspection.errors import ModelFileError
from inspection.geometry import Box, check_fit, letterbox
from inspection.mapped_files import releasing_mapped_pages

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "inspection-model/1"


class Prediction(NamedTuple):
    """Station-side model output for a batch.

    Attributes:
        raw_score: (N,) float32 raw image score.
        score: (N,) float32 normalised score in [0, 1]; the image threshold sits at 0.5.
        anomaly_map: (N, S, S) float32 raw per-pixel anomaly at model input size.
        is_anomalous: (N,) bool, raw score above the image threshold in use.
    """

    raw_score: np.ndarray
    score: np.ndarray
    anomaly_map: np.ndarray
    is_anomalous: np.ndarray


def read_bundle_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The JSON object at ``path`` whose ``format`` must be ``fmt`` (``what`` names it in errors).

    The one reading of a bundle's metadata file: detector bundles (``model.json``) here, typing
    bundles (``runtime.json``) in :mod:`inspection.openset.typer_runtime`.
    """
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read {what} metadata {path}: {exc}") from exc
    if meta.get("format") != fmt:
        raise ModelFileError(f"{path} is not an {fmt} bundle (format {meta.get('format')!r})")
    return meta


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a bundle, validated for format."""
    return read_bundle_json(Path(directory) / "model.json", BUNDLE_FORMAT, "model")


def preprocess(
    frame: np.ndarray,
    size: int,
    roi: tuple[int, int, int, int] | None = None,
    fit: str = "stretch",
) -> np.ndarray:
    """Camera frame (H, W, 3) uint8 RGB or (H, W) gray -> (size, size, 3) uint8 RGB.

    ``roi`` is (x, y, w, h) in frame pixels, cropped before resizing; ``fit`` is the model's
    (:attr:`OpenVinoModel.fit`): ``stretch`` resizes, ``pad`` letterboxes
    (:func:`inspection.geometry.letterbox`, the training loaders' function). A frame (or region)
    already at ``size`` x ``size`` is returned as it is, not copied.
    """
    return preprocess_box(frame, size, roi, fit)[0]


def preprocess_box(
    frame: np.ndarray,
    size: int,
    roi: tuple[int, int, int, int] | None = None,
    fit: str = "stretch",
) -> tuple[np.ndarray, Box]:
    """:func:`preprocess` and the valid box ``(x, y, w, h)`` of the region in the model input.

    Map model pixels back onto the (region of the) frame with
    :func:`inspection.geometry.unletterbox` or :func:`inspection.geometry.crop_box`.
    """
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if roi is not None:
        x, y, w, h = roi
        frame = frame[y : y + h, x : x + w]
        if frame.size == 0:
            raise ValueError(f"region of interest {roi} lies outside the frame")
    return letterbox(frame, size, fit)


def to_input(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(
        1.0 / 255.0
    )


#: Precisions a station's ``inference_precision`` may name (``auto``: :func:`resolve_precision`).
PRECISIONS = ("auto", "f32", "bf16")


def cpu_capabilities(core: Any = None) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``BF16``, ``INT8``, ...)."""
    import openvino as ov

    core = core if core is not None else ov.Core()
    try:
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError:
        return []


def resolve_precision(requested: str, meta: dict[str, Any], capabilities: list[str]) -> str:
    """The ``INFERENCE_PRECISION_HINT`` to compile with.

    ``f32``/``bf16``: as asked. ``auto``: the bundle's verified choice
    (``model.json`` ``runtime_precision.auto``, written at export by
    :func:`inspection.precision.check_runtime_precision`: bf16 only when it flipped at most
    0.5 % of the verdicts on held-out normal and painted images) where this CPU has the units
    for it; ``f32`` otherwise, and for bundles exported before the check existed.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"inference precision {requested!r}: expected one of {PRECISIONS}")
    if requested != "auto":
        return requested
    choice = str((meta.get("runtime_precision") or {}).get("auto", "f32"))
    if choice != "f32" and choice.upper() in capabilities:
        return choice
    return "f32"


#: Size limit of a compile cache folder: older blobs go first (every retrained model adds one).
CACHE_MAX_MB = 2048
#: Weights (MB, the prepared graph's ``.bin``) above which no OpenVINO blob is cached for it.
#: Such a blob is mostly a second copy of the weights: writing it on the first start held the
#: weights twice (PaDiM at 256 px: a station process peaked at 643 against 458 MiB), and
#: importing it saves little over compiling the prepared graph from its file (~0.3 s).
CACHE_BLOB_MAX_MB = 64.0


def prune_cache(
    cache_dir: Path, max_mb: float = CACHE_MAX_MB, keep: Path | None = None
) -> list[Path]:
    """Delete the least recently written entries until ``cache_dir`` holds at most ``max_mb``.

    Entries are OpenVINO's compiled blobs and the station's prepared graphs
    (:func:`station_ir`: ``station-*.xml``/``.bin``/``.json``, one entry). Never the newest blob
    (the model just compiled) nor ``keep`` (the prepared graph just loaded). Returns the deleted
    files. Errors (a file another process is using or removed) are skipped: pruning is
    housekeeping, never a reason to fail a model load.
    """
    try:
        files = [p for p in cache_dir.iterdir() if p.is_file()]
        blobs = sorted((p for p in files if p.suffix == ".blob"), key=lambda p: p.stat().st_mtime)
        graphs = [p for p in files if p.name.startswith("station-") and p.suffix == ".bin"]
        entries = [(p.stat().st_mtime, [p]) for p in blobs[:-1]]
        for weights in graphs:
            if keep is not None and weights.stem == keep.stem:
                continue
            group = [weights.with_suffix(".xml"), weights, weights.with_suffix(".json")]
            entries.append((weights.stat().st_mtime, group))
        total = sum(p.stat().st_size for p in files if p.suffix in (".blob", ".bin", ".xml"))
    except OSError:
        return []
    removed: list[Path] = []
    limit = max_mb * 2**20
    for _, group in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        for path in group:
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            total -= size
            removed.append(path)
    if removed:
        logger.info("OpenVINO compile cache %s: removed %d old file(s)", cache_dir, len(removed))
    return removed


def usable_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """``cache_dir`` created if missing, or None (with a warning) when it cannot be written."""
    if cache_dir is None:
        return None
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        logger.warning("OpenVINO compile cache %s unusable (%s): compiling without it", path, exc)
        return None
    return path


#: Constant weights (MB) of a batched MatMul from which :func:`put_constants_first` swaps it.
CONSTANTS_FIRST_MIN_MB = 16.0


def put_constants_first(model: Any, min_mb: float | None = None) -> int:
    """Rewrite each batched ``MatMul(x, W)`` with large constant ``W`` as ``(W^T x^T)^T``; count.

    Why: OpenVINO's CPU plugin repacks the constant second operand of a MatMul into its own
    blocked layout, an anonymous copy next to the mapped ``model.bin``, and with a dynamic batch
    it repacks again for every batch size it meets. PaDiM's (4096, 120, 120) inverse
    covariances (236 MB) at 256 px: a station scoring batches of 1-4 frames peaked at ~920 MiB
    (the mapped file + a copy per batch size). As the *first* operand the constant is read where
    it lies (the mapped file, shared and evictable) and nothing is repacked: 433 MiB for the same
    batches (OpenVINO 2026.4, f32; ``bench/results/station-memory.md``).

    Same products, possibly summed in another order: scores move by float32 rounding only
    (<= 8e-6 on raw PaDiM scores of ~40, within what the plugin's batch size already changes:
    the original graph at batch 2 or 4 differs from batch 1 by the same amount). Time per call,
    measured under load: batch 1 ~0.9x, batch 4 ~1.2x the original.

    Only rank-3 MatMuls whose second input is a Constant (or a Convert of one, fp16 weights) of
    at least ``min_mb`` MB (None: :data:`CONSTANTS_FIRST_MIN_MB`): small weights
    (convolutional detectors) keep the plugin's layout.
    """
    import openvino.opset13 as ops

    from inspection.ov_export import copy_precision_mark

    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        a, w = op.input_value(0), op.input_value(1)
        const = w.get_node()
        if const.get_type_name() == "Convert":
            const = const.input_value(0).get_node()
        if const.get_type_name() != "Constant":
            continue
        if a.get_partial_shape().rank.get_length() != 3 or len(w.get_shape()) != 3:
            continue
        nbytes = int(np.prod(const.get_output_shape(0))) * const.get_output_element_type(0).size
        if nbytes < (CONSTANTS_FIRST_MIN_MB if min_mb is None else min_mb) * 1e6:
            continue
        attrs = op.get_attributes()
        # (op(a) @ op(w))^T = op(w)^T @ op(a)^T, op: the MatMul's own transpose flags
        swapped = ops.matmul(w, a, not attrs["transpose_b"], not attrs["transpose_a"])
        result = ops.transpose(swapped, ops.constant(np.array([0, 2, 1], dtype=np.int64)))
        result.set_friendly_name(op.get_friendly_name())
        for node in (swapped, result):  # a head kept f32 (inspection.ov_export) stays so
            copy_precision_mark(op, node)
        op.output(0).replace(result.output(0))
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


#: Version of what :func:`prepare_graph` does to a bundle's graph; part of the prepared graph's
#: cache key, so a change here never loads a graph prepared by an older release.
PREPARED_GRAPH_VERSION = 1


def prepare_graph(
    model: Any, xml: Path, size: int, batch_size: int | None, constants_first: bool
) -> tuple[Any, int]:
    """A bundle's graph made into what the station compiles, and how many MatMuls were swapped.

    Checks the (N, 3, S, S) input, applies :func:`put_constants_first`, fixes the batch size
    (``size``: S) when asked and compiles the uint8 NHWC -> float NCHW conversion into the graph.
    """
    import openvino as ov

    shape = model.input(0).get_partial_shape()
    if shape.rank.get_length() != 4 or str(shape[1]) != "3":
        raise ModelFileError(f"{xml}: input shape {shape} is not (N, 3, S, S)")
    swapped = put_constants_first(model) if constants_first else 0
    if batch_size is not None:
        model.reshape({model.input(0).get_any_name(): [batch_size, 3, size, size]})
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    return ppp.build(), swapped


def _prepared_key(xml: Path, size: int, batch_size: int | None, constants_first: bool) -> str:
    """Cache key of a bundle's prepared graph: the graph file, its weights file's identity
    (absolute path, size, modification time: what OpenVINO's own cache uses for a model read
    from a path) and everything :func:`prepare_graph` depends on."""
    import openvino as ov

    weights = xml.with_suffix(".bin")
    stat = weights.stat()
    digest = hashlib.sha256(xml.read_bytes())
    limit = CONSTANTS_FIRST_MIN_MB if constants_first else None
    parts = (weights.resolve(), stat.st_size, stat.st_mtime_ns, size, batch_size, limit)
    digest.update(repr((*parts, PREPARED_GRAPH_VERSION, ov.__version__)).encode())
    return digest.hexdigest()[:24]


def station_ir(
    core: Any,
    xml: Path,
    cache_dir: Path,
    size: int,
    batch_size: int | None,
    constants_first: bool,
) -> tuple[Path, int] | None:
    """The bundle's prepared graph (:func:`prepare_graph`) saved in the compile cache; its path
    and the MatMuls swapped, or None (with a warning) when it cannot be written.

    Why: OpenVINO keys its compile cache on a model *object* by hashing the whole graph with
    its weights, so every restart read the bundle's weights into memory only to find the
    compiled blob, which maps its own copy of them: PaDiM at 256 px peaked at ~565 MiB on a cache
    hit in a bare process. A model compiled *from a file path* is keyed on the file's identity
    instead: the weights of the bundle are never read on a hit (~330 MiB, and a faster start).
    Written once per bundle and settings (atomically: a second station starting at the same
    time writes its own copy and the last rename wins, same content).
    """
    import openvino as ov

    try:
        key = _prepared_key(xml, size, batch_size, constants_first)
    except OSError:
        return None  # no weights file: the caller's read_model reports it
    path = cache_dir / f"station-{key}.xml"
    info = path.with_suffix(".json")
    try:
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path, int(json.loads(info.read_text())["constants_first"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # half written or damaged: prepare it again
    try:
        model, swapped = prepare_graph(core.read_model(xml), xml, size, batch_size, constants_first)
    except RuntimeError as exc:
        raise ModelFileError(f"cannot load OpenVINO model {xml}: {exc}") from exc
    tmp = cache_dir / f"station-{key}.tmp{os.getpid()}.xml"
    try:
        ov.save_model(model, tmp, compress_to_fp16=False)
        tmp.with_suffix(".json").write_text(json.dumps({"constants_first": swapped}))
        for suffix in (".bin", ".json", ".xml"):  # the graph last: it marks the entry complete
            os.replace(tmp.with_suffix(suffix), path.with_suffix(suffix))
    except (OSError, RuntimeError) as exc:
        logger.warning("cannot keep the prepared graph in %s (%s): compiling without", path, exc)
        for suffix in (".bin", ".json", ".xml"):
            tmp.with_suffix(suffix).unlink(missing_ok=True)
        return None
    return path, swapped


class OpenVinoModel:
    """A compiled deployable model with its calibration.

    The uint8 -> float conversion and HWC -> CHW transpose are compiled into the graph
    (OpenVINO's pre-processing), so a batch of camera frames goes in as it is, shared rather
    than copied, and the conversion runs in OpenVINO's threads instead of in Python.

    Args:
        directory: bundle directory.
        device: OpenVINO device name.
        image_threshold: override of the bundle's raw image threshold (per-station setting).
        num_threads: CPU inference threads (None: OpenVINO's choice).
        inference_precision: OpenVINO ``INFERENCE_PRECISION_HINT``: "f32", "bf16" (faster on
            CPUs with bf16 units, scores shift slightly), or "auto" (:func:`resolve_precision`:
            bf16 where the bundle verified it at export and the CPU has it, else f32); the one
            compiled is :attr:`precision`.
        performance_hint: ``"latency"`` (one inference uses every core) or ``"throughput"``
            (the cores are split into parallel streams; pair it with one :meth:`sibling` per
            scoring thread).
        cpu_pinning: OpenVINO ``ENABLE_CPU_PINNING`` (None: OpenVINO's choice). Turn it off
            when several compiled models run side by side with one thread each: pinned, they
            share the first core (543 against 1753 frames/s for two OC-GAN models on 2 cores).
        batch_size: compile for exactly this many images per call (None: any, the bundle's
            dynamic batch); a call with fewer is padded with copies of its last image and
            gets its own images' results back. A static shape lets OpenVINO pick better
            memory layouts (OC-GAN per 256 px image on one thread 1000 -> 780 us at batch 1)
            and repack large weights once (``constants_first``).
        cache_dir: OpenVINO compile cache folder (``CACHE_DIR``; None: no cache). A restart
            with the same bundle and settings loads the compiled blob instead of compiling
            again (created when missing; unusable: a warning, and no cache; kept under
            :data:`CACHE_MAX_MB` by :func:`prune_cache`); graphs with more than
            :data:`CACHE_BLOB_MAX_MB` of weights keep only their prepared graph there
            (:func:`station_ir`) and compile it from that file, without a blob.
        constants_first: large constant weights of batched MatMuls are read in place instead
            of repacked (:func:`put_constants_first`; PaDiM at 256 px with a dynamic batch:
            ~920 -> ~430 MiB resident, scores within float32 rounding); how many were:
            :attr:`constants_first`. None (the default): only with a dynamic batch. With a
            static one OpenVINO repacks them once, at compile, into a layout it reads about
            twice as fast (PaDiM at 256 px, batch 4, bf16: 124 -> 238 frames/s), and the
            mapped weights file's pages, unused from then on, are handed back as it compiles
            (:func:`inspection.mapped_files.releasing_mapped_pages`): about the same memory as
            the in-place read (~360-390 against ~400 MiB in a bare process, peak included).
    """

    def __init__(
        self,
        directory: str | Path,
        device: str = "CPU",
        image_threshold: float | None = None,
        num_threads: int | None = None,
        inference_precision: str = "f32",
        performance_hint: str = "latency",
        cpu_pinning: bool | None = None,
        batch_size: int | None = None,
        cache_dir: str | Path | None = None,
        constants_first: bool | None = None,
    ) -> None:
        import openvino as ov

        self.directory = Path(directory)
        self.meta = read_metadata(self.directory)
        xml = self.directory / "model.xml"
        if not xml.is_file():
            raise ModelFileError(f"missing OpenVINO model {xml}")
        self.size = int(self.meta["input"]["size"])
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 or None, not {batch_size}")
        #: images per inference call compiled for (None: any); fewer are padded
        self.batch_size = batch_size
        if constants_first is None:
            constants_first = batch_size is None
        try:
            #: how frames become the model's square input (``stretch`` or ``pad``)
            self.fit = check_fit(str(self.meta["input"].get("fit", "stretch")))
        except ValueError as exc:
            raise ModelFileError(f"{self.directory}: {exc}") from exc
        cal = self.meta["calibration"]
        self.image_threshold = float(
            image_threshold if image_threshold is not None else cal["image_threshold"]
        )
        self.pixel_threshold = float(cal["pixel_threshold"])
        self._span = max(float(cal["score_max"]) - float(cal["score_min"]), 1e-12)
        core = ov.Core()
        # Never OpenVINO's own default: CPUs with bf16 units would run an FP32 IR in bf16 and
        # shift scores against the thresholds calibrated in f32 whether or not that is safe.
        caps = cpu_capabilities(core) if inference_precision == "auto" else []
        #: the ``INFERENCE_PRECISION_HINT`` compiled with ("f32" or "bf16")
        self.precision = resolve_precision(inference_precision, self.meta, caps)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": performance_hint.upper(),
            "INFERENCE_PRECISION_HINT": self.precision,
        }
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        if cpu_pinning is not None:
            config["ENABLE_CPU_PINNING"] = cpu_pinning
        self.cache_dir = usable_cache_dir(cache_dir)
        # A static batch without the in-place read: OpenVINO repacks the weights as it
        # compiles and never reads the mapped files again, so their pages are handed back while
        # it compiles (the peak stays near the end state: PaDiM 256 px ~360 against ~600 MiB).
        releasing = batch_size is not None and not constants_first
        dirs = [self.directory, *([self.cache_dir] if self.cache_dir is not None else [])]
        with releasing_mapped_pages(dirs) if releasing else contextlib.nullcontext():
            self.compiled = self._compile(core, xml, device, config, batch_size, constants_first)
        self._tensor = ov.Tensor
        self._count = 0  # images of the request's current call (the rest is padding)
        self._input: np.ndarray | None = None
        self.request = self.compiled.create_infer_request()

    def _compile(
        self,
        core: Any,
        xml: Path,
        device: str,
        config: dict[str, Any],
        batch_size: int | None,
        constants_first: bool,
    ) -> Any:
        """The compiled station graph (:func:`prepare_graph`, through the compile cache when
        there is one); sets :attr:`constants_first`."""
        prepared = None
        if self.cache_dir is not None:
            prepared = station_ir(core, xml, self.cache_dir, self.size, batch_size, constants_first)
            weights = prepared[0].with_suffix(".bin") if prepared else xml.with_suffix(".bin")
            try:
                heavy = weights.stat().st_size / 1e6 > CACHE_BLOB_MAX_MB
            except OSError:
                heavy = False
            if not heavy:
                config["CACHE_DIR"] = str(self.cache_dir)
        try:
            if prepared is not None:
                #: batched MatMuls whose constant weights are read in place
                #: (:func:`put_constants_first`)
                self.constants_first = prepared[1]
                compiled = core.compile_model(str(prepared[0]), device, config)
            else:
                model, self.constants_first = prepare_graph(
                    core.read_model(xml), xml, self.size, batch_size, constants_first
                )
                compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise ModelFileError(f"cannot load OpenVINO model {xml}: {exc}") from exc
        if self.cache_dir is not None:
            prune_cache(self.cache_dir, keep=prepared[0] if prepared else None)
        return compiled

    def sibling(self) -> OpenVinoModel:
        """The same compiled model with its own inference request, for another thread."""
        twin = copy.copy(self)
        twin.request = self.compiled.create_infer_request()
        return twin

    @property
    def detector(self) -> str:
        return str(self.meta["detector"])

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores -> [0, 1] with the image threshold at 0.5."""
        # minimum/maximum rather than np.clip: a third of the cost on the per-frame path
        norm = np.asarray((raw - self.image_threshold) / self._span + 0.5, dtype=np.float32)
        return np.minimum(np.maximum(norm, np.float32(0.0)), np.float32(1.0))

    def _set_input(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        n = len(images)
        if self.batch_size is not None and n != self.batch_size:
            if not 0 < n < self.batch_size:
                raise ValueError(
                    f"{self.directory}: {n} images in one call to a model compiled for "
                    f"{self.batch_size} per call"
                )
            pad = np.repeat(images[-1:], self.batch_size - n, axis=0)
            images = np.ascontiguousarray(np.concatenate([images, pad]))
        self._count = n
        self._input = images  # shared with OpenVINO: must live until the request is done
        self.request.set_input_tensor(self._tensor(images, shared_memory=True))
        return images

    def _outputs(self, copy_maps: bool = True) -> tuple[np.ndarray, np.ndarray]:
        n = self._count
        score = np.array(self.request.get_output_tensor(0).data, dtype=np.float32).reshape(-1)
        data = self.request.get_output_tensor(1).data
        amap = np.array(data, dtype=np.float32) if copy_maps else np.asarray(data, np.float32)
        amap = amap.reshape(amap.shape[0], amap.shape[-2], amap.shape[-1])
        return score[:n], amap[:n]

    def infer_raw(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 RGB -> (scores (N,), maps (N, S, S)) float32, synchronously."""
        self._set_input(images)
        self.request.infer()
        return self._outputs()

    def predict(self, images: np.ndarray) -> Prediction:
        """(N, S, S, 3) uint8 RGB already at model size -> :class:`Prediction`."""
        raw, amap = self.infer_raw(images)
        return Prediction(raw, self.normalize(raw), amap, raw > self.image_threshold)

    def submit(self, images: np.ndarray) -> PendingPrediction:
        """Start inference on (N, S, S, 3) uint8 RGB and return at once.

        The caller does other work (post-processing the previous batch) while OpenVINO runs
        this one, then calls :meth:`PendingPrediction.wait`. One request per instance: wait
        for a pending prediction before submitting again on the same instance (use
        :meth:`sibling` for more requests in flight).
        """
        keep = self._set_input(images)  # shared with OpenVINO: must live until the wait
        self.request.start_async()
        return PendingPrediction(self, keep)


class PendingPrediction:
    """An inference started by :meth:`OpenVinoModel.submit`; :meth:`wait` gives its result."""

    def __init__(self, model: OpenVinoModel, images: np.ndarray) -> None:
        self._model = model
        self._images = images

    def wait(self, copy_maps: bool = True) -> Prediction:
        """Block until the inference is done; :class:`Prediction` of the submitted batch.

        ``copy_maps=False``: the anomaly maps are a view of the request's output memory, valid
        only until the next ``submit`` on the same instance (copy the maps you keep); saves a
        copy of every map (a quarter of a megabyte per 256x256 frame) when most are dropped.
        """
        m = self._model
        m.request.wait()
        raw, amap = m._outputs(copy_maps)
        self._images = None  # type: ignore[assignment]
        return Prediction(raw, m.normalize(raw), amap, raw > m.image_threshold)
