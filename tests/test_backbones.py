from pathlib import Path

import pytest
import torch

from transferkit.modalities.image.backbones import list_backbones, load_weights, read_state_dict, resolve_backbone
from transferkit.modalities.image.sources.packaged import PACKAGED
from transferkit.errors import BackboneError


def test_packaged_backbone_resolves_offline_with_its_preprocessing():
    spec = resolve_backbone("efficientnet_lite0")
    assert spec.source == "packaged" and spec.arch == "tf_efficientnet_lite0"
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5) and spec.preprocessing.input_size == 224
    assert Path(spec.weights).is_file()


def test_packaged_weights_load_by_order_and_classify_imagenet():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    before = model.conv_stem.weight.clone()
    load_weights(model, read_state_dict(PACKAGED["efficientnet_lite0"].path()), "packaged")
    assert not torch.equal(before, model.conv_stem.weight)
    assert model.classifier.weight.shape == (1000, 1280)


def test_fingerprint_tracks_weights_and_preprocessing():
    a = resolve_backbone("efficientnet_lite0")
    assert a.fingerprint == resolve_backbone("efficientnet_lite0").fingerprint
    assert a.fingerprint != resolve_backbone("efficientnet_lite0", input_size=64).fingerprint
    assert a.fingerprint != resolve_backbone("efficientnet_lite0", pretrained=False).fingerprint


def test_local_checkpoint_loads_and_mismatch_names_the_tensor(tmp_path: Path):
    import timm
    from safetensors.torch import save_file

    good = timm.create_model("resnet18", num_classes=0)
    save_file(good.state_dict(), str(tmp_path / "r18.safetensors"))
    net = resolve_backbone("timm:resnet18", weights=tmp_path / "r18.safetensors").build()
    assert torch.equal(net.conv1.weight, good.conv1.weight)

    wrong = {k: v for k, v in good.state_dict().items()}
    wrong["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BackboneError, match="layer1.0.conv1.weight"):
        resolve_backbone("timm:resnet18", weights=tmp_path / "wrong.pth").build()


def test_arbitrary_pickle_is_refused(tmp_path: Path):
    torch.save({"weights": torch.zeros(2), "callback": Path("x")}, tmp_path / "evil.pth")
    with pytest.raises(BackboneError, match="evil.pth"):
        read_state_dict(tmp_path / "evil.pth")


def test_hub_download_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as info:
        resolve_backbone("timm:resnet18").build()
    assert "--weights" in str(info.value) and "\n" not in str(info.value)


def test_unknown_names_are_clear_errors():
    with pytest.raises(BackboneError, match="unknown timm architecture"):
        resolve_backbone("timm:not_a_model_xyz")
    with pytest.raises(BackboneError, match="weights file not found"):
        resolve_backbone("efficientnet_lite0", weights="missing.pth")


def test_list_backbones_reports_offline_packaged():
    rows = {row["name"]: row for row in list_backbones()}
    assert rows["efficientnet_lite0"]["offline"] and rows["efficientnet_lite0"]["num_features"] == 1280
