"""With the network unplugged, every detector builds and the backbone holds the shipped weights."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import timm
import torch

from inspection import backbone
from inspection.detectors import registry
from inspection.errors import BackboneWeightsError


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub offline and every socket connection refused."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access attempted during an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _reference_model() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(backbone.load_lite0_state_dict(), strict=True)
    return model.eval()


def test_lite0_weights_load_strict_and_features_match(no_network: None) -> None:
    backbone.install_offline_weights()
    feats = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, features_only=True, out_indices=(1, 2, 3)
    ).eval()
    ref = _reference_model()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        out = feats(x)
        ref_out = []
        h = ref.bn1(ref.conv_stem(x))
        for i, block in enumerate(ref.blocks):
            h = block(h)
            if i in (1, 2, 4):
                ref_out.append(h)
    assert [f.shape[1] for f in out] == [24, 40, 112]
    for a, b in zip(out, ref_out, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("key", registry.keys())
def test_every_detector_builds_offline(no_network: None, key: str) -> None:
    cls = registry.get(key)
    det = cls(cls.quick_config())
    assert isinstance(det.torch_model, torch.nn.Module)


def test_other_backbone_needs_a_weights_file(no_network: None, tmp_path: Any) -> None:
    with pytest.raises(BackboneWeightsError, match="register_weights_file"):
        backbone.install_offline_weights("resnet18")
    with pytest.raises(BackboneWeightsError):
        backbone.register_weights_file("resnet18", tmp_path / "missing.pth")


def test_user_weights_file_is_used(no_network: None, tmp_path: Any) -> None:
    model = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    backbone.register_weights_file("resnet18", path)
    loaded = timm.create_model("resnet18", pretrained=True)
    torch.testing.assert_close(loaded.conv1.weight, model.conv1.weight)
