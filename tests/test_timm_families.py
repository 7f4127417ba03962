"""Modern timm families end to end from a timm name and a local weights file (random weights saved as timm builds
them): a DINOv2-style ViT (patch 14, four register tokens, 518 px position table), ConvNeXt and MobileNetV4 --
probe, the int8 engine on AVX2-only kernels, gradual with layer decay, LoRA presets, block grouping, ONNX export
with parity, serve. 56 px (a multiple of the ViT's patch) keeps each step to seconds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_folder, run_main

from transferkit import ImageClassifier
from transferkit.errors import BackboneError
from transferkit.modalities.image.backbones import resolve_backbone
from transferkit.runs.rundir import read_tensors

SIZE = 56


@dataclass(frozen=True)
class Family:
    width: int  # the pooled features' width (MobileNetV4: its head convolution's, not num_features' 960)
    lora: tuple[str, ...]  # the ends of the names its LoRA preset targets
    stem: str  # a parameter of its first block
    blocks: int  # stem, the family's stages or blocks, what follows them


FAMILIES = {
    "vit_small_patch14_reg4_dinov2": Family(384, ("qkv", "proj", "fc1", "fc2"), "reg_token", 13),
    "convnext_atto": Family(320, ("fc1", "fc2"), "stem.0.weight", 6),
    "mobilenetv4_conv_small": Family(1280, ("pw_exp.conv", "pw_proj.conv", "conv_head"), "conv_stem.weight", 7),
}


@dataclass(frozen=True)
class Case:
    arch: str
    family: Family
    weights: Path
    data: Path

    @property
    def name(self) -> str:
        return f"timm:{self.arch}"

    def spec(self):
        return resolve_backbone(self.name, weights=self.weights, input_size=SIZE)


@pytest.fixture(scope="module", params=list(FAMILIES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    # the whole network as timm builds it: its ImageNet classifier, the ViT's position table at its own 518 px
    state = timm.create_model(request.param).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "weights.safetensors"))
    data = make_folder(folder / "data", {"train": 8, "val": 2})  # 16 training images: enough to calibrate int8
    return Case(request.param, FAMILIES[request.param], folder / "weights.safetensors", data)


def test_a_probe_from_the_name_and_a_weights_file(case: Case, tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = run_main(monkeypatch, capsys, "train", case.data, "--backbone", case.name, "--weights",
                            case.weights, "--image-size", SIZE, "--workers", 0, "--out", tmp_path / "run")
    assert code == 0, err
    assert read_tensors(tmp_path / "run" / "model.safetensors", "head.")["weight"].shape == (2, case.family.width)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]["accuracy"] >= 0.5


def test_the_int8_engine_on_avx2_only_kernels(case: Case, tmp_path: Path, isolated_cache: Path, monkeypatch,
                                              capsys) -> None:
    import onnx
    from test_int8 import AVX2_ONLY

    from transferkit.features import quantize

    monkeypatch.setattr(quantize, "cpu_features", lambda: AVX2_ONLY)  # no VNNI: u8 weights, nothing saturates
    code, _, err = run_main(monkeypatch, capsys, "train", case.data, "--backbone", case.name, "--weights",
                            case.weights, "--image-size", SIZE, "--engine", "onnx-int8", "--workers", 0,
                            "--out", tmp_path / "run")
    assert code == 0, err
    [engine] = (isolated_cache / "engines" / case.spec().fingerprint).glob(f"features-{SIZE}-int8*.onnx")
    graph = onnx.load(str(engine)).graph
    quantised = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    weights = {init.data_type for init in graph.initializer if init.name in quantised and len(init.dims) >= 2}
    assert weights == {onnx.TensorProto.UINT8}, weights  # really int8 (a ViT's graph too), with u8 weights
    assert quantize.read_record(engine)["kernels"] == "u8u8"


def test_lora_preset_targets_the_family_and_merges(case: Case) -> None:
    from transferkit.methods.peft_adapters import LoraAdapter
    from transferkit.modalities import IMAGE

    model = IMAGE.build_model(case.spec(), 2)
    adapter = LoraAdapter(r=4)
    adapter.attach(model)
    model.eval()  # LoRA's dropout too
    assert len(adapter.chosen) >= 4 and all(name.endswith(case.family.lora) for name in adapter.chosen)
    assert {n.rsplit(".", 1)[-1] for n in adapter.chosen} >= {part.rsplit(".", 1)[-1] for part in case.family.lora}
    for name, parameter in model.named_parameters():  # a trained adapter: B away from its zero start
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    images = torch.randint(0, 255, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    with torch.no_grad():
        before = model(images)
        after = adapter.merge(model)(images)
    assert not any("lora" in n for n, _ in model.named_parameters()) and torch.allclose(before, after, atol=1e-4)


def test_blocks_group_the_family_and_layer_decay_steps_over_them(case: Case) -> None:
    from transferkit.config import RunConfig
    from transferkit.modalities import IMAGE
    from transferkit.train.adapters import Adapter
    from transferkit.train.blocks import backbone_blocks
    from transferkit.train.phases import apply_phase
    from transferkit.strategies import parse_strategy

    model = IMAGE.build_model(case.spec(), 2)
    blocks = backbone_blocks(model.backbone)
    names = [n for n, _ in model.backbone.named_parameters()]
    assert len(blocks) == case.family.blocks and sorted(n for b in blocks for n in b) == sorted(names)
    assert case.family.stem in blocks[0]
    strategy = parse_strategy("finetune")
    groups, _ = apply_phase(model, strategy.phases(1, 0)[0], RunConfig(layer_decay=0.5), strategy, Adapter(),
                            "frozen", IMAGE.defaults.training)
    rates = list(dict.fromkeys(group["lr"] for group in groups))  # per block, input end first, then the head
    assert len(rates) == len(blocks) + 1 and rates == sorted(rates)


@pytest.fixture(scope="module")
def tuned(case: Case, tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """gradual, one epoch: the head starts from the probe's solution, then the whole network trains (layer decay
    over its blocks); with a head-only epoch first, that epoch would be the best one kept on these easy images."""
    out = tmp_path_factory.mktemp(f"{case.arch}-gradual") / "run"
    clf = ImageClassifier(backbone=case.name, weights=str(case.weights), image_size=SIZE, strategy="gradual",
                          epochs=1, freeze_epochs=0, layer_decay=0.7, batch_size=8, workers=0, lr=1e-3,
                          cache_dir=str(session_cache))
    clf.verbose = False
    clf.fit(str(case.data), out=out).save(out)
    assert [row["phase"] for row in clf.metrics_["history"]] == ["all"]
    return out


def test_gradual_trains_the_backbone_and_keeps_its_engine(case: Case, tuned: Path) -> None:
    from safetensors.torch import load_file

    given = load_file(str(case.weights))
    trained = read_tensors(tuned / "model.safetensors", "features.backbone.")
    moved = [k for k, v in trained.items() if k in given and v.shape == tuple(given[k].shape)
             and not np.allclose(v, given[k].numpy())]
    assert len(moved) > len(trained) // 3  # the whole network trained, not the head alone
    assert (tuned / "engine.onnx").is_file()


def test_export_onnx_has_parity(tuned: Path, tmp_path: Path) -> None:
    from test_export import check_parity

    from transferkit.export.exporter import export_run

    check_parity(export_run(tuned, "onnx", tmp_path / "onnx").folder, items=4)


def test_serves_a_request_from_the_runs_own_engine(tuned: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_serve import LIMITS, check_answer, png, upload

    from transferkit.serve.app import create_app

    with TestClient(create_app(tuned, LIMITS, cache_dir=tmp_path / "cache")) as client:
        check_answer(client.post("/predict?top_k=2", files=upload(png((220, 40, 40)))), 1, 2, ["blue", "red"])
    assert "exporting" not in capsys.readouterr().err  # engine.onnx of the run, not a hidden export


def test_weights_of_another_family_are_one_line(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("convnext_atto").state_dict(), str(tmp_path / "convnext.safetensors"))
    with pytest.raises(BackboneError) as refused:
        resolve_backbone("timm:vit_small_patch14_reg4_dinov2", weights=tmp_path / "convnext.safetensors",
                         input_size=SIZE).build()
    assert "\n" not in str(refused.value) and "convnext.safetensors" in str(refused.value)


def test_vit_weights_saved_at_another_size_are_resampled_to_the_runs(tmp_path: Path) -> None:
    """A DINOv2 file fine-tuned at 224 px (a 16 x 16 position table) into a 56 px run (4 x 4): timm's checkpoint
    filter fits it to the network's 518 px, then the network is resampled to the run's size."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    at_224 = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=224, num_classes=0)
    save_file(at_224.state_dict(), str(tmp_path / "vit224.safetensors"))
    net = resolve_backbone("timm:vit_small_patch14_reg4_dinov2", weights=tmp_path / "vit224.safetensors",
                           input_size=SIZE).build()
    assert tuple(net.pos_embed.shape) == (1, (SIZE // 14) ** 2, 384)
    assert torch.equal(net.blocks[3].mlp.fc1.weight, at_224.blocks[3].mlp.fc1.weight)  # the file's, not random
    with torch.no_grad():
        assert net(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 384)


def test_a_last_batch_of_one_image_is_dropped_when_batchnorm_trains(tmp_path: Path) -> None:
    """MobileNetV4 normalises its pooled head with a BatchNorm: a batch of one image cannot train it (it failed
    with a traceback); 16 images in batches of 5 leave one, which waits for the next epoch's order."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("mobilenetv4_conv_small").state_dict(), str(tmp_path / "mnv4.safetensors"))
    data = make_folder(tmp_path / "data", {"train": 8, "val": 2})
    clf = ImageClassifier(backbone="timm:mobilenetv4_conv_small", weights=str(tmp_path / "mnv4.safetensors"),
                          image_size=SIZE, strategy="finetune", epochs=1, bn="train", batch_size=5, workers=0)
    clf.verbose = False
    clf.fit(str(data))
    assert [row["phase"] for row in clf.metrics_["history"]] == ["all"]
