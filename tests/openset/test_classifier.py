"""OpenSetTyper end to end on images: fit, predict, save/load, export to the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection.errors import ConfigError, InvalidStateError, NotFittedError
from inspection.openset.classifier import OpenSetTyper, fit_typers
from inspection.openset.config import (
    METHODS,
    MahalanobisConfig,
    MspConfig,
    TyperConfig,
    method_config,
)
from inspection.openset.scoring import TypingResult

from .conftest import Crops


@pytest.mark.slow
def test_fit_on_images_predicts_typing_results(
    tiny_config: TyperConfig, extractor, known_train: Crops
) -> None:  # type: ignore[no-untyped-def]
    idx = np.r_[0:6, 12:18, 24:30]  # two of each type, small and fast
    images = known_train.images[idx]
    types = [known_train.types[i] for i in idx]
    typer = OpenSetTyper(tiny_config, extractor).fit(images, types)
    res = typer.predict(images[:4])
    assert len(res) == 4 and all(isinstance(r, TypingResult) for r in res)
    assert all(r.label in typer.classes and 0 <= r.confidence <= 1 for r in res)
    assert typer.calibration is not None and np.isfinite(typer.threshold)


def test_bad_inputs_raise_specific_errors(tiny_config: TyperConfig, extractor, features) -> None:  # type: ignore[no-untyped-def]
    views = features[0][:4]
    with pytest.raises(ConfigError):
        OpenSetTyper(tiny_config, extractor).fit_features(views, ["a", "a", "a", "a"])
    with pytest.raises(ConfigError):
        OpenSetTyper(tiny_config, extractor).fit_features(views, ["a", "a", "a", "b"])
    with pytest.raises(NotFittedError):
        OpenSetTyper(tiny_config, extractor).predict_features(views[:, 0])
    msp = tiny_config.model_copy(update={"method": MspConfig()})
    typer = OpenSetTyper(msp, extractor).fit_features(views, ["a", "a", "b", "b"])
    with pytest.raises(InvalidStateError):  # msp has no class means to add to
        typer.add_class_features("c", views)


def test_all_methods_share_one_network(
    tiny_config: TyperConfig, extractor, features, known_train: Crops
) -> None:  # type: ignore[no-untyped-def]
    typers = fit_typers(
        features[0], known_train.types, tiny_config, [method_config(m) for m in METHODS], extractor
    )
    heads = {id(t.head) for t in typers.values()}
    assert len(heads) == 1 and set(typers) == set(METHODS)


@pytest.mark.slow
def test_save_load_and_export_agree(
    tmp_path: Path,
    tiny_config: TyperConfig,
    extractor,
    features,
    known_train: Crops,
    new_train: Crops,
    test_crops: Crops,
) -> None:  # type: ignore[no-untyped-def]
    from inspection.openset.typer_runtime import TypingRuntime

    cfg = tiny_config.model_copy(update={"method": MahalanobisConfig()})
    typer = OpenSetTyper(cfg, extractor).fit_features(features[0], known_train.types)
    typer.add_class_features("crack", features[1])
    images = test_crops.images[:10]
    want = typer.predict(images)

    loaded = OpenSetTyper.load(typer.save(tmp_path / "saved"), extractor)
    assert loaded.classes == typer.classes and loaded.threshold == typer.threshold
    got = loaded.predict(images)
    assert [r.label for r in got] == [r.label for r in want]
    np.testing.assert_allclose(
        [r.unknown_score for r in got], [r.unknown_score for r in want], rtol=1e-5
    )

    runtime = TypingRuntime(typer.export(tmp_path / "bundle"))
    ran = runtime.predict(images)
    assert runtime.classes == typer.classes
    assert [r.label for r in ran] == [r.label for r in want]
    assert [r.is_unknown for r in ran] == [r.is_unknown for r in want]
    np.testing.assert_allclose(
        [r.unknown_score for r in ran], [r.unknown_score for r in want], rtol=1e-3
    )

    # the station's scoring threads share one runtime: concurrent calls must all succeed
    from concurrent.futures import ThreadPoolExecutor

    single = runtime.outputs(images)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: runtime.outputs(images), range(12)))
    for out in outs:
        for a, b in zip(out, single, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
