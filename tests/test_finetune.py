"""Fine-tuning engine: strategies, the training loop, checkpoints/resume, compare. Tiny data, seconds each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import faults
from transferkit.errors import TransferkitError

SMALL = dict(image_size=32, batch_size=4, workers=0, engine="torch")


def make_folder(root: Path, per_class: int = 6, val: int = 3, classes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    colors = ((200, 40, 40), (40, 40, 200), (40, 200, 40))[:classes]
    for split, n in (("train", per_class), ("val", val)):
        for c, color in enumerate(colors):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.normal(color, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture()
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    return make_folder(tmp_path / "data")


def cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; ``fault`` runs it with the test's fault-injection callback (tests/faults.py)."""
    argv = faults.command(*args, "--callback", f"fault:{fault}") if fault else [sys.executable, "-m", "transferkit", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=300)


SMALL_ARGS = ("--image-size", "32", "--batch-size", "4", "--workers", "0", "--engine", "torch")


# -- strategies and config ------------------------------------------------------------------------------------
def test_strategy_phases_and_errors() -> None:
    from transferkit.config import RunConfig
    from transferkit.strategies import parse_strategy

    gradual = parse_strategy("gradual")
    phases = gradual.phases(5, freeze_epochs=2)
    assert [(p.name, p.first_epoch, p.epochs, p.train_blocks) for p in phases] == [("head", 0, 2, 0), ("all", 2, 3, None)]
    assert gradual.init_head_from_probe and not gradual.frozen_backbone
    assert parse_strategy("last-k:2").last_k == 2
    assert parse_strategy("scratch").pretrained is False
    assert parse_strategy("linear-probe").frozen_backbone
    with pytest.raises(TransferkitError, match="last-k:N"):
        parse_strategy("last-k:0")
    with pytest.raises(TransferkitError, match="config field 'schedule'"):
        RunConfig(schedule="linear")
    with pytest.raises(TransferkitError, match="config field 'epochs'"):
        RunConfig(epochs=0)


def test_last_k_freezes_all_but_last_blocks_and_training_changes_only_them(data: Path, tmp_path: Path) -> None:
    import torch

    from transferkit.estimators.image import ImageClassifier
    from transferkit.modalities.image.backbones import resolve_backbone

    clf = ImageClassifier(strategy="last-k:1", epochs=1, lr=1e-2, **SMALL).fit(data, out=tmp_path / "run")
    pretrained = resolve_backbone("efficientnet_lite0", input_size=32).build().state_dict()
    tuned = clf.trained_tensors_
    stem = "backbone.conv_stem.weight"
    last = "backbone.conv_head.weight"
    assert np.array_equal(tuned[stem], pretrained["conv_stem.weight"].numpy())  # frozen block untouched
    assert not np.array_equal(tuned[last], pretrained["conv_head.weight"].numpy())  # last block trained
    # BatchNorm statistics are frozen by default on small data
    assert np.array_equal(tuned["backbone.bn2.running_mean"], pretrained["bn2.running_mean"].numpy())
    last_block_params = sum(v.size for k, v in tuned.items() if k.startswith(("backbone.blocks.6", "backbone.conv_head",
                                                                                "backbone.bn2")) and "running" not in k
                            and "num_batches" not in k)
    assert clf.metrics_["trainable_parameters"] == last_block_params + clf.head_.weight.size + clf.head_.bias.size
    assert torch.is_tensor(torch.zeros(1))


def test_gradual_fit_save_load_predict(data: Path, tmp_path: Path) -> None:
    from transferkit.estimators.image import ImageClassifier
    from transferkit.modalities.image.backbones import resolve_backbone

    out = tmp_path / "run"
    clf = ImageClassifier(strategy="gradual", epochs=2, **SMALL).fit(data, out=out)
    assert [r["phase"] for r in clf.metrics_["history"]] == ["head", "all"]
    pretrained_fp = resolve_backbone("efficientnet_lite0", input_size=32).fingerprint
    assert clf.source_.fingerprint != pretrained_fp  # cached features of the pretrained backbone never reused
    clf.save(out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "checkpoints" / "last.safetensors").is_file() and (out / "checkpoints" / "best.safetensors").is_file()
    loaded = ImageClassifier.load(out)
    loaded.config = loaded.config.replace(engine="torch")
    # a loaded run is cached under its files' content fingerprint (runs/integrity.py), the same at every load
    assert loaded.source_.fingerprint == ImageClassifier.load(out).source_.fingerprint != pretrained_fp
    files = sorted(str(p) for p in (data / "val").rglob("*.png"))
    np.testing.assert_allclose(loaded.predict_proba(files), clf.predict_proba(files), atol=1e-5)
    assert loaded.evaluate(data / "val")["accuracy"] == pytest.approx(clf.metrics_["val"]["accuracy"])


def test_early_stop_and_metrics(data: Path, tmp_path: Path) -> None:
    from transferkit.estimators.image import ImageClassifier

    # an LR too small to change the validation accuracy: no improvement after epoch 1, stop after epoch 2
    clf = ImageClassifier(strategy="finetune", epochs=5, lr=1e-12, early_stop=1, **SMALL).fit(data, out=tmp_path / "r")
    assert clf.metrics_["epochs_run"] == 2 and clf.metrics_["stopped_early"]
    assert clf.metrics_["best_epoch"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data: Path, tmp_path: Path) -> None:
    import torch

    from transferkit.errors import TrainingError
    from transferkit.estimators.image import ImageClassifier
    from transferkit.plugins import LOSS_TERMS
    from transferkit.train.losses import LossTerm
    from transferkit.train.state import load

    class Poison(LossTerm):  # a loss term that turns NaN after 3 steps (= epoch 1)
        name = "poison"
        calls = 0

        def forward(self, batch, outputs):
            Poison.calls += 1
            return outputs.logits.sum() * (torch.tensor(float("nan")) if Poison.calls > 3 else 0.0)

    LOSS_TERMS.register("poison", Poison, replace=True)
    try:
        with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 1.*last good checkpoint \(epoch 1\)"):
            ImageClassifier(strategy="finetune", epochs=3, methods=["poison"], **SMALL).fit(data, out=tmp_path / "run")
    finally:
        LOSS_TERMS.unregister("poison")
    assert load(tmp_path / "run" / "checkpoints" / "last.safetensors")["state"]["epoch"] == 1


def test_resume_after_sigkill_matches_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    args = ("train", str(data), "--strategy", "gradual", "--epochs", "3", "--seed", "3", *SMALL_ARGS)
    straight = cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    killed = cli(*args, "--out", str(tmp_path / "killed"), fault="at=3:2")
    assert killed.returncode == -9  # SIGKILL in the middle of epoch 3 (phase 'all')
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    again = cli(*args, "--out", str(tmp_path / "killed"))
    assert again.returncode == 2 and "--resume" in again.stderr  # an unfinished run is not silently restarted
    resumed = cli("train", "--config", str(tmp_path / "killed" / "checkpoints" / "config.yaml"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2/3 (phase 'all')" in resumed.stderr
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert a["val"]["accuracy"] == b["val"]["accuracy"] and a["val"]["log_loss"] == pytest.approx(b["val"]["log_loss"])
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["phase"] == rb["phase"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
    from transferkit.runs.rundir import read_tensors

    ta, tb = read_tensors(tmp_path / "straight" / "model.safetensors"), read_tensors(tmp_path / "killed" / "model.safetensors")
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6)
    # compare prints both runs
    table = cli("compare", str(tmp_path / "straight"), str(tmp_path / "killed"), "--json")
    rows = json.loads(table.stdout)["runs"]
    assert [r["strategy"] for r in rows] == ["gradual", "gradual"]
    assert rows[0]["val_accuracy"] == rows[1]["val_accuracy"] and rows[0]["trainable_parameters"] > 3_000_000


def test_ctrl_c_mid_epoch_writes_a_checkpoint_and_resume_matches(data: Path, tmp_path: Path) -> None:
    args = ("train", str(data), "--strategy", "finetune", "--epochs", "2", "--seed", "4", *SMALL_ARGS)
    straight = cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    stopped = cli(*args, "--out", str(tmp_path / "stopped"), fault="at=1:2,action=interrupt")
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted in epoch 1 after step 2/3" in stopped.stderr and "--resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    from transferkit.train.state import load

    last = load(tmp_path / "stopped" / "checkpoints" / "last.safetensors")["state"]
    assert (last["epoch"], last["step"]) == (0, 2)
    resumed = cli(*args, "--out", str(tmp_path / "stopped"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 0/2, step 2" in resumed.stderr
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert [r["train_loss"] for r in a["history"]] == pytest.approx([r["train_loss"] for r in b["history"]], rel=1e-5)
    from transferkit.runs.rundir import read_tensors

    ta = read_tensors(tmp_path / "straight" / "model.safetensors")
    tb = read_tensors(tmp_path / "stopped" / "model.safetensors")
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6)


def test_ctrl_c_in_a_run_without_a_folder_says_it_cannot_be_resumed(data: Path, capsys) -> None:
    """fit() without out= (and every tune trial) checkpoints into a scratch folder that goes with the process:
    its Ctrl-C must not tell the user to resume from it."""
    from transferkit.estimators.image import ImageClassifier
    from transferkit.plugins import CALLBACKS

    CALLBACKS.register("fault", faults.FaultInjection, replace=True)
    try:
        clf = ImageClassifier(strategy="finetune", epochs=1, image_size=32, batch_size=4, workers=0, engine="torch",
                              callbacks=["fault:at=1:2,action=interrupt"])
        with pytest.raises(KeyboardInterrupt):
            clf.fit(str(data))
    finally:
        CALLBACKS.unregister("fault")
    err = capsys.readouterr().err
    assert "interrupted in epoch 1 after step 2/" in err and "cannot be resumed" in err and "--resume" not in err


@pytest.mark.parametrize("augment", ["light", "affine"])
def test_augmentation_depends_on_seed_epoch_and_index_only(data: Path, augment: str) -> None:
    import torch

    from transferkit.config import RunConfig
    from transferkit.modalities.image.backbones import resolve_backbone
    from transferkit.modalities.image.folders import load_image_folder
    from transferkit.modalities.image.training import image_train_data

    split = load_image_folder(data).train
    train = image_train_data(split, resolve_backbone("efficientnet_lite0", input_size=32).preprocessing,
                             RunConfig(seed=1, augment=augment, workers=0), 2)
    train.dataset.set_epoch(3)
    first = train.dataset[5][0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(train.dataset[5][0], first)  # the caller's RNG neither decides nor is touched
    assert torch.equal(torch.get_rng_state(), state)
    train.dataset.set_epoch(4)
    assert not torch.equal(train.dataset[5][0], first)


def test_resume_refuses_a_changed_config(data: Path, tmp_path: Path) -> None:
    from transferkit.estimators.image import ImageClassifier
    from transferkit.train.state import CheckpointError

    out = tmp_path / "run"
    ImageClassifier(strategy="finetune", epochs=1, **SMALL).fit(data, out=out)
    with pytest.raises(CheckpointError, match="config field 'lr'"):
        ImageClassifier(strategy="finetune", epochs=1, lr=0.1, **SMALL).fit(data, out=out, resume=True)


DDP_SCRIPT = '''
import json, sys
from transferkit.estimators.image import ImageClassifier
data, out = sys.argv[1:3]
clf = ImageClassifier(strategy="gradual", epochs=2, image_size=32, batch_size=4, workers=0, engine="torch").fit(data, out=out)
print("RESULT", json.dumps({"history": [r["train_loss"] for r in clf.metrics_["history"]],
                            "fp": clf.source_.fingerprint, "main": clf.is_main_process_}), flush=True)
if clf.is_main_process_:
    clf.save(out)
'''


def test_two_processes_on_cpu_agree_and_the_saved_model_loads(data: Path, tmp_path: Path) -> None:
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    done = subprocess.run([torchrun, "--nproc_per_node", "2", str(script), str(data), str(out)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 2 and sorted(r["main"] for r in results) == [False, True]
    assert results[0]["fp"] == results[1]["fp"]  # identical weights on both ranks
    assert results[0]["history"] == results[1]["history"]
    from transferkit.estimators.image import ImageClassifier

    loaded = ImageClassifier.load(out)
    assert loaded.source_.fingerprint == ImageClassifier.load(out).source_.fingerprint  # its files' content
    loaded.config = loaded.config.replace(engine="torch")
    assert len(loaded.predict(data / "val")) == 6


def test_grad_checkpointing_checkpoints_the_blocks_and_changes_no_result(data: Path, monkeypatch) -> None:
    import torch
    import torch.utils.checkpoint

    from transferkit.estimators.image import ImageClassifier
    from transferkit.modalities.image.backbones import resolve_backbone
    from transferkit.train.precision import checkpoint_activations

    backbone = resolve_backbone("efficientnet_lite0", input_size=32).build().train()
    segments, checkpoint = [], torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: segments.append(1) or checkpoint(*a, **k))
    checkpoint_activations(backbone)
    backbone(torch.rand(2, 3, 32, 32)).sum().backward()
    assert len(segments) == sum(len(stage) for stage in backbone.blocks)  # every block: its activations recomputed
    assert all(p.grad is not None for p in backbone.blocks.parameters())
    settings = dict(strategy="finetune", epochs=1, image_size=32, batch_size=4, workers=0, engine="torch", seed=3)
    plain = ImageClassifier(**settings).fit(str(data))
    saving = ImageClassifier(**settings, grad_checkpointing=True).fit(str(data))
    assert [r["train_loss"] for r in saving.metrics_["history"]] == pytest.approx(
        [r["train_loss"] for r in plain.metrics_["history"]], rel=1e-5)
    assert saving.metrics_["val"]["accuracy"] == plain.metrics_["val"]["accuracy"]


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(data: Path, tmp_path: Path) -> None:
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    launch = [torchrun, "--nproc_per_node", "2", "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", str(data), "--strategy", "finetune", "--epochs", "2", "--seed", "5", *SMALL_ARGS]

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    straight = run([*launch, "-m", "transferkit", *args, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    # every rank SIGKILLs itself before step 2 of epoch 2: the launch fails, epoch 1's checkpoint stays
    killed = run([*launch, os.path.abspath(faults.__file__), *args, "--out", str(tmp_path / "killed"),
                  "--callback", "fault:at=2:2"])
    assert killed.returncode != 0 and not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = run([*launch, "-m", "transferkit", "train", "--config",
                   str(tmp_path / "killed" / "checkpoints" / "config.yaml"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1/2" in resumed.stderr
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("straight", "killed"))
    assert [r["train_loss"] for r in a["history"]] == pytest.approx([r["train_loss"] for r in b["history"]], rel=1e-5)
    from transferkit.runs.rundir import read_tensors

    ta, tb = read_tensors(tmp_path / "straight" / "model.safetensors"), read_tensors(tmp_path / "killed" / "model.safetensors")
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6)
