"""Station configuration: YAML files in ``stations/`` validated by pydantic.

A station file (``stations/<line>/<station>.yaml``) is deep-merged over every ``defaults.yaml``
between it and the ``stations/`` folder (outermost first), then validated. Unknown keys are
rejected (``extra="forbid"``) with a message naming the file and the key path.

Units: thresholds ``image_threshold`` is on the *normalised* image score (0..1, 0.5 = the
model's calibrated threshold, the same scale as the database's per-station threshold);
``pixel_threshold`` is in raw anomaly-map units (the bundle's ``calibration.pixel_threshold``
scale). Database thresholds, when an operator has set them, win over the file, which wins over
the model's calibration. Relative paths are relative to the working directory the station runs
in (like ``sqlite:///var/inspection.db``).

Camera credentials never appear in a config: a stream URL names placeholders
(``rtsp://{user}:{password}@cam1/stream``) and ``credentials_env: CAM1`` reads
``CAM1_USER`` / ``CAM1_PASSWORD`` from the environment when the camera is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inspection.errors import ConfigError

DEFAULTS_NAME = "defaults.yaml"
STATIONS_DIR_NAME = "stations"
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_STATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_URL_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/@]*)@")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- camera sources ----------------------------------------------------------------------------


class ReconnectConfig(_Model):
    """Exponential backoff between attempts to reopen a lost camera, seconds."""

    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError("reconnect.max_s must be >= reconnect.initial_s")
        return self


class _SourceBase(_Model):
    """Fields every camera source has.

    ``name``: the camera's name in the database (default: the source type). ``overflow``: what
    capture does when scoring is slower than the camera: ``drop`` the new frame (counted) or
    ``wait`` (backpressure; for sources that keep frames, like folders and files). None picks
    the source's natural policy.
    """

    name: str | None = Field(None, min_length=1, max_length=100)
    overflow: Literal["drop", "wait"] | None = None
    reconnect: ReconnectConfig = ReconnectConfig()

    def overflow_policy(self) -> Literal["drop", "wait"]:
        """The effective overflow policy."""
        return self.overflow or "drop"

    def camera_name(self) -> str:
        """The camera's name in the database."""
        return self.name or str(getattr(self, "type", "camera"))


class UsbSourceConfig(_SourceBase):
    """A local (USB/V4L2) camera by OpenCV device index; optional resolution and frame rate."""

    type: Literal["usb"] = "usb"
    index: int = Field(0, ge=0)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)


class StreamSourceConfig(_SourceBase):
    """An RTSP/HTTP stream through OpenCV's FFmpeg backend.

    ``url`` may hold ``{user}`` and ``{password}`` placeholders, filled from the environment
    variables ``<credentials_env>_USER`` / ``<credentials_env>_PASSWORD`` at open time (URL-
    quoted). Literal credentials in the URL are rejected. Timeouts are in seconds.
    """

    type: Literal["stream"] = "stream"
    url: str = Field(min_length=1)
    credentials_env: str | None = None
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)

    @field_validator("credentials_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"credentials_env {value!r} must look like CAM1 (A-Z, 0-9, _)")
        return value

    @model_validator(mode="after")
    def _no_literal_credentials(self) -> StreamSourceConfig:
        placeholders = "{user}" in self.url or "{password}" in self.url
        if placeholders and self.credentials_env is None:
            raise ValueError("url has {user}/{password} placeholders but no credentials_env")
        match = _URL_USERINFO.match(self.url)
        if match:
            userinfo = match.group(1)
            stripped = userinfo.replace("{user}", "").replace("{password}", "").replace(":", "")
            if stripped:
                raise ValueError(
                    "credentials must not be written in the url: use {user}:{password} "
                    "placeholders and credentials_env"
                )
        return self


class VideoSourceConfig(_SourceBase):
    """A video file: ``loop`` restarts it at the end, ``realtime`` paces reads at its frame rate."""

    type: Literal["video"] = "video"
    path: Path
    loop: bool = False
    realtime: bool = False

    def overflow_policy(self) -> Literal["drop", "wait"]:
        return self.overflow or ("drop" if self.realtime else "wait")


class FolderSourceConfig(_SourceBase):
    """A folder a (PLC-triggered) camera writes images into, watched for new files.

    Each new file whose size and modification time have been stable for ``settle_s`` seconds is
    processed once, oldest first. Corrupt or truncated files are logged, counted as bad frames
    and skipped. Processed files are moved to ``move_to`` when set (rejected ones to
    ``move_to/rejected``), else remembered in ``state_file`` (one name per line) when set, else
    remembered in memory only (a restart re-reads them; the result rows stay unique because the
    idempotency key is derived from the file's name, size and mtime).
    """

    type: Literal["folder"] = "folder"
    path: Path
    patterns: tuple[str, ...] = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff")
    poll_s: float = Field(0.2, gt=0)
    settle_s: float = Field(0.5, ge=0)
    move_to: Path | None = None
    state_file: Path | None = None

    def overflow_policy(self) -> Literal["drop", "wait"]:
        return self.overflow or "wait"


class SyntheticSourceConfig(_SourceBase):
    """The embedded synthetic production line as a camera (:class:`SyntheticLine`).

    ``fps``: camera frame rate (None: as fast as the pipeline takes frames). ``count``: stop after
    that many parts (None: endless). ``cache``: pre-render that many parts at open and replay
    them in a loop, so the camera costs no CPU (benchmarks); 0 renders every part.
    """

    type: Literal["synthetic"] = "synthetic"
    family: Literal["disc", "tile", "pcb"] = "disc"
    size: int = Field(256, ge=32, le=4096)
    seed: int = 0
    defect_rate: float = Field(0.1, ge=0.0, le=1.0)
    fps: float | None = Field(None, gt=0)
    start_index: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1)
    cache: int = Field(0, ge=0)

    def overflow_policy(self) -> Literal["drop", "wait"]:
        return self.overflow or ("drop" if self.fps else "wait")


CameraConfig = Annotated[
    UsbSourceConfig
    | StreamSourceConfig
    | VideoSourceConfig
    | FolderSourceConfig
    | SyntheticSourceConfig,
    Field(discriminator="type"),
]
SOURCE_TYPES = ("usb", "stream", "video", "folder", "synthetic")


# -- model, thresholds, typing -----------------------------------------------------------------


class BootstrapConfig(_Model):
    """Train a first model when none exists (synthetic cameras only; runs in a subprocess so the
    station process never imports torch). ``detector``: a registry key or ``auto`` (the
    default: :func:`inspection.training.train_auto` keeps the best of padim and patchcore at
    ``image_size`` and patchcore at 1.25 x it, judged on subtle painted defects), ``normals``:
    good parts rendered for training, ``image_size``: model input side (default: the camera's
    size), ``config``: extra detector settings (not with ``auto``)."""

    detector: str = "auto"
    normals: int = Field(120, ge=8)
    image_size: int | None = Field(None, ge=32, le=1024)
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _auto_takes_no_settings(self) -> BootstrapConfig:
        if self.detector == "auto" and self.config:
            raise ValueError("bootstrap detector 'auto' chooses its own settings: drop 'config'")
        return self


class DetectorSettings(_Model):
    """Which detector model a station runs and how.

    ``source: bundle``: the bundle folder ``path`` (hot-reloaded when its ``model.json``
    changes); ``source: database``: the station's active model version in the database
    (hot-reloaded when another version is activated). ``device``/``num_threads``/
    ``inference_precision`` go to OpenVINO: ``auto`` (the default) runs bf16 where the bundle
    verified at export that bf16 flips at most 0.5 % of its verdicts and the CPU has bf16 units,
    f32 otherwise (:func:`inspection.runtime.resolve_precision`); ``bf16`` forces it (half the
    memory traffic, slightly shifted scores). ``performance_hint``: ``auto`` (the default,
    chosen with the pipeline's ``auto`` settings from the core count and the bundle:
    :mod:`inspection.station.tuning`), ``latency`` (each inference uses every core: the
    shortest verdict) or ``throughput`` (the cores are split into parallel streams, one per
    scoring worker, set ``pipeline.infer_workers`` to 2 or more: more frames per second for
    small models). ``cpu_pinning``: pin OpenVINO's inference threads to
    cores (None: OpenVINO's choice, except that several scoring workers with the latency hint,
    each compiling its own model, are never pinned: each would pin to the same first cores).
    ``path`` is also where ``bootstrap`` writes. ``compile_cache``/``cache_dir``: OpenVINO's
    compile cache (``CACHE_DIR``), on by default, so a restarted station loads its compiled
    model instead of compiling it again (:func:`compile_cache_dir`).
    """

    source: Literal["bundle", "database"] = "bundle"
    path: Path | None = None
    device: str = "CPU"
    num_threads: int | None = Field(None, ge=1)
    inference_precision: Literal["auto", "f32", "bf16"] = "auto"
    performance_hint: Literal["auto", "latency", "throughput"] = "auto"
    cpu_pinning: bool | None = None
    #: OpenVINO compile cache: a restart loads the compiled model instead of compiling it again
    compile_cache: bool = True
    #: its folder (None: ``INSPECTION_OV_CACHE_DIR``, else ``<artifacts_dir>/.ov-cache``)
    cache_dir: Path | None = None
    bootstrap: BootstrapConfig | None = None

    @model_validator(mode="after")
    def _path_for_bundles(self) -> DetectorSettings:
        if self.source == "bundle" and self.path is None:
            raise ValueError("detector.source 'bundle' needs detector.path (the bundle folder)")
        return self


class ClassifierConfig(_Model):
    """Open-set defect typing for anomalous frames.

    ``loader`` (``"module:function"``) is called with ``path`` and returns a callable
    ``(crop (H, W, 3) uint8, anomaly_map (H, W) float32) -> (label, confidence, is_unknown)``.
    ``known_accept_rate``: this station's operating point, the share of known-type defects that
    keep their type (the rest may be called unknown); None keeps the bundle's (0.95 by
    default). The threshold comes from the bundle's out-of-fold training scores; when set, the
    loader is called with it as a keyword argument.
    """

    path: Path
    loader: str = Field(
        "inspection.station.classify:load_typing_classifier", pattern=r"^[\w.]+:\w+$"
    )
    known_accept_rate: float | None = Field(None, gt=0.0, lt=1.0)


# -- storage, schedule, outputs, tuning --------------------------------------------------------


class RetentionConfig(_Model):
    """What is stored per frame, and for how long.

    Every frame's result row is always stored. ``frames``/``heatmaps``: which frames keep the
    full camera image (``frame_format``) and the lossless model-resolution heatmap (``.npz``):
    ``all``, ``anomalous`` or ``none``. Frames without a full heatmap keep a
    ``pass_heatmap_size`` x ``pass_heatmap_size`` downsampled one (0: none; its row carries the
    full map's max and mean). ``crops``: store a crop of each defect region. ``days``: how long
    plain passes are kept (the database's station retention; None: forever).
    """

    days: int | None = Field(None, ge=1)
    frames: Literal["all", "anomalous", "none"] = "anomalous"
    heatmaps: Literal["all", "anomalous", "none"] = "anomalous"
    pass_heatmap_size: int = Field(0, ge=0, le=256)
    crops: bool = True
    frame_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)

    def keeps_heatmap(self, anomalous: bool) -> bool:
        """Whether a frame with this verdict stores a heatmap (full or downsampled)."""
        return (
            self.heatmaps == "all"
            or (self.heatmaps == "anomalous" and anomalous)
            or (self.pass_heatmap_size > 0)
        )


class RetrainConfig(_Model):
    """When the retraining scheduler retrains this station (cron syntax, validated)."""

    schedule: str | None = None
    enabled: bool = True

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"retrain.schedule {value!r} is not a valid cron expression")
        return value


class WebhookConfig(_Model):
    """POST each result (or only anomalous ones) as JSON to ``url``; failures are counted."""

    url: str = Field(pattern=r"^https?://")
    only_anomalous: bool = True
    timeout_s: float = Field(2.0, gt=0)
    queue_size: int = Field(100, ge=1)


class OutputsConfig(_Model):
    """Where results go besides the database: the log (``anomalous``/``all``/``none``), a webhook."""

    log: Literal["anomalous", "all", "none"] = "anomalous"
    webhook: WebhookConfig | None = None


class PipelineConfig(_Model):
    """Pipeline tuning.

    ``queue_size``: frames waiting for scoring; ``batch_size``: frames scored per inference call
    (frames already waiting, never waits to fill a batch); ``infer_workers``: scoring threads,
    each with its own compiled model and inference request (frames may then be stored out of
    capture order; ``captured_at`` keeps the order); ``requests_per_worker``: inference
    requests each scoring thread keeps in flight (2: the next batch goes to OpenVINO before the
    previous one is thresholded and handed on, so inference never waits for Python; 1:
    strictly one at a time). ``batch_size``, ``infer_workers`` and ``requests_per_worker`` are
    ``auto`` by default: chosen when the station loads its model, from the CPU cores it may use
    and the bundle (:func:`inspection.station.tuning.resolve_tuning`); a number pins one.
    ``persist_queue_size``/
    ``persist_batch``: results waiting for the database / written per transaction (each waiting
    result holds its frame and float32 map, ~0.45 MB at 256 px: 64 bound that to ~30 MB; a
    database outage belongs in the disk spool, ``INSPECTION_SPOOL_DIR``, not in memory);
    ``persist_linger_ms``: how long the persist stage waits for more results to fill a batch
    (fewer, larger transactions: less CPU per result; delays only the row, never the verdict);
    ``persist_retry_s``: how long a result is retried while the database is unavailable before
    it counts as a persist failure; ``reload_poll_s``: how often the model and thresholds are
    checked for changes; ``max_regions``/``min_region_area_px``: defect regions kept per
    anomalous frame (area in model pixels); ``stats_interval_s``: counter log period (0: off).
    """

    queue_size: int = Field(8, ge=1)
    batch_size: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    infer_workers: Annotated[int, Field(ge=1, le=8)] | Literal["auto"] = "auto"
    requests_per_worker: Annotated[int, Field(ge=1, le=4)] | Literal["auto"] = "auto"
    persist_queue_size: int = Field(64, ge=1)
    persist_batch: int = Field(32, ge=1)
    persist_linger_ms: float = Field(20.0, ge=0, le=1000)
    persist_retry_s: float = Field(60.0, ge=0)
    reload_poll_s: float = Field(5.0, gt=0)
    max_regions: int = Field(8, ge=1)
    min_region_area_px: int = Field(4, ge=1)
    stats_interval_s: float = Field(60.0, ge=0)


class RoiConfig(_Model):
    """Region of interest in frame pixels, cropped before resizing."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(ge=1)
    h: int = Field(ge=1)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


class StationConfig(_Model):
    """One inspection station.

    ``id``: the station's unique name (database ``station.name``); ``line``: its line's name;
    ``resize``: model input side the region of interest is resized to (None: the model's; a
    different value is an error at model load, not a silent second resize).
    """

    id: str
    line: str = Field(min_length=1, max_length=100)
    description: str | None = None
    camera: CameraConfig
    roi: RoiConfig | None = None
    resize: int | None = Field(None, ge=32, le=4096)
    detector: DetectorSettings
    image_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    pixel_threshold: float | None = None
    classifier: ClassifierConfig | None = None
    retention: RetentionConfig = RetentionConfig()
    retrain: RetrainConfig = RetrainConfig()
    outputs: OutputsConfig = OutputsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    artifacts_dir: Path = Path("var/artifacts")

    @field_validator("id")
    @classmethod
    def _station_id(cls, value: str) -> str:
        if not _STATION_ID.fullmatch(value):
            raise ValueError(f"station id {value!r}: use letters, digits, '_', '.', '-' (<= 100)")
        return value

    @model_validator(mode="after")
    def _bootstrap_needs_synthetic(self) -> StationConfig:
        if self.detector.bootstrap is not None and self.camera.type != "synthetic":
            raise ValueError(
                "detector.bootstrap trains on the synthetic line: camera.type must be synthetic"
            )
        return self


#: Environment variable naming the OpenVINO compile cache folder of every station on the box.
OV_CACHE_ENV = "INSPECTION_OV_CACHE_DIR"


def compile_cache_dir(config: StationConfig) -> Path | None:
    """Where the station's OpenVINO compile cache lives (None: ``compile_cache: false``).

    ``detector.cache_dir``, else ``$INSPECTION_OV_CACHE_DIR``, else ``<artifacts_dir>/.ov-cache``.
    Cached blobs are keyed by the model and the compile settings, so stations may share one.
    """
    det = config.detector
    if not det.compile_cache:
        return None
    if det.cache_dir is not None:
        return det.cache_dir
    env = os.environ.get(OV_CACHE_ENV)
    return Path(env) if env else config.artifacts_dir / ".ov-cache"


# -- loading -----------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, anything else is replaced."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read station config {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def defaults_files(path: Path) -> list[Path]:
    """``defaults.yaml`` files that apply to the station file ``path``, outermost first.

    Looks in the file's folder and its parents up to the nearest folder named ``stations``
    (inclusive); without such a parent, only in the file's own folder.
    """
    folder = path.resolve().parent
    chain = [folder, *folder.parents]
    stop = next((i for i, p in enumerate(chain) if p.name == STATIONS_DIR_NAME), 0)
    found = [p / DEFAULTS_NAME for p in chain[: stop + 1] if (p / DEFAULTS_NAME).is_file()]
    return list(reversed(found))


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "camera" and parts[1] in SOURCE_TYPES:
        del parts[1]  # the discriminated union's tag
    return parts


def _has_path(data: Any, path: list[int | str]) -> bool:
    for part in path:
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list | tuple) and isinstance(part, int) and part < len(data)
        if not (in_mapping or in_list):
            return False
        data = data[part]
    return True


def format_validation_error(
    exc: ValidationError, layers: list[tuple[str, Mapping[str, Any]]]
) -> str:
    """One line per problem, naming the file that set the key (``layers``: name, mapping;
    later layers override earlier ones) and the key path."""
    fallback = layers[-1][0] if layers else "<station config>"
    lines = []
    for err in exc.errors():
        parts = _clean_loc(err["loc"])
        where = ".".join(str(p) for p in parts) or "(top level)"
        source = next((name for name, data in reversed(layers) if _has_path(data, parts)), fallback)
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{where}'")
        elif err["type"] == "missing":
            lines.append(f"{fallback}: missing required key '{where}'")
        else:
            lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def parse_station_config(
    data: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]] | None = None
) -> StationConfig:
    """Validate an already merged mapping; ``layers`` (file name, mapping) name the culprits.

    Raises:
        ConfigError: unknown keys, missing keys or invalid values, one line each.
    """
    try:
        return StationConfig.model_validate(dict(data))
    except ValidationError as exc:
        names = layers if layers is not None else [("<station config>", data)]
        raise ConfigError(format_validation_error(exc, names)) from None


def load_station_config(path: str | Path) -> StationConfig:
    """Read a station YAML file merged over its ``defaults.yaml`` files and validate it.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys or invalid values (the message
            names the file that set the offending key, and the key's path).
    """
    station_path = Path(path)
    if not station_path.is_file():
        raise ConfigError(f"station config {station_path} does not exist")
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (str(p), _read_yaml(p)) for p in [*defaults_files(station_path), station_path]
    ]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    return parse_station_config(merged, layers)


def station_files(line_dir: str | Path) -> list[Path]:
    """The station files of a line folder: every ``*.yaml``/``*.yml`` but ``defaults.yaml``."""
    folder = Path(line_dir)
    if not folder.is_dir():
        raise ConfigError(f"line folder {folder} does not exist")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".yaml", ".yml") and p.name != DEFAULTS_NAME and p.is_file()
    )
    if not files:
        raise ConfigError(f"line folder {folder} has no station files (*.yaml)")
    return files


def load_line(line_dir: str | Path) -> list[StationConfig]:
    """Every station of a line folder, validated; station ids must be unique.

    Raises:
        ConfigError: a file is invalid, or two files use the same station id.
    """
    configs = [load_station_config(p) for p in station_files(line_dir)]
    seen: dict[str, int] = {}
    for cfg in configs:
        seen[cfg.id] = seen.get(cfg.id, 0) + 1
    duplicates = sorted(k for k, n in seen.items() if n > 1)
    if duplicates:
        raise ConfigError(f"line {line_dir}: station id {duplicates[0]!r} is used more than once")
    return configs
