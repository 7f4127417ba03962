"""The training loop's three seams (loss terms, callbacks, adapters), each used from this file without any
edit to the loop, and exact resume with a loss term that owns state, on a tiny model and tensors."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from faults import FaultInjection

from transferkit.config import RunConfig
from transferkit.errors import CheckpointError
from transferkit.plugins import ADAPTERS, CALLBACKS, LOSS_TERMS
from transferkit.strategies import parse_strategy
from transferkit.train import state as ckpt
from transferkit.train.callbacks import Callback
from transferkit.train.data import EpochSampler, TrainData
from transferkit.train.loop import Interrupted, train_model
from transferkit.train.losses import LossTerm


class ToyModel(nn.Module):
    """8 inputs -> 16 pooled features -> 3 classes; two backbone blocks (a Linear each)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)

    @property
    def backbone(self) -> nn.Module:
        return self.features

    def forward(self, x: torch.Tensor, with_features: bool = False):
        features = self.features(x)
        logits = self.head(features)
        return (features, logits) if with_features else logits


def toy_data(n: int = 48, seed: int = 0) -> tuple[TrainData, tuple[torch.Tensor, np.ndarray]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    labels = y.tolist()
    data = TrainData(torch.utils.data.TensorDataset(x, y), EpochSampler(labels, 0), labels, deterministic=True)
    return data, (x[:12], y[:12].numpy())


def predict(model: nn.Module, x: torch.Tensor, accelerator) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.cpu()(x), dim=1).numpy()


def config(**changes) -> RunConfig:
    base = dict(epochs=3, batch_size=8, lr=1e-2, workers=0, precision="no", strategy="finetune", augment="none")
    return RunConfig(**{**base, **changes})


def train(tmp: Path, resume: bool = False, **changes):
    data, val = toy_data()
    cfg = config(**changes)
    return train_model(ToyModel(), cfg, parse_strategy(cfg.strategy), data, val, 3, tmp, resume=resume,
                       predict=predict)


class CenterPull(LossTerm):
    """A toy term with state: a learnable centre for the features, and a running count of batches seen
    (extra state), both of which must come back on resume."""

    name = "center"

    def __init__(self, weight: float = 0.1) -> None:
        super().__init__(weight)
        self.center = nn.Parameter(torch.zeros(16))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, batch, outputs) -> torch.Tensor:
        self.batches += 1
        return (outputs.features - self.center).pow(2).mean()


class Recorder(Callback):
    seen: list[str] = []

    def __init__(self, tag: str = "x") -> None:
        self.tag = tag

    def epoch_end(self, context) -> None:
        Recorder.seen.append(f"{self.tag}:{context.epoch + 1}:{context.record['train_loss']:.4f}")


@pytest.fixture
def registered():
    LOSS_TERMS.register("center", CenterPull, replace=True)
    CALLBACKS.register("recorder", Recorder, replace=True)
    CALLBACKS.register("fault", FaultInjection, replace=True)
    yield
    for registry, name in ((LOSS_TERMS, "center"), (CALLBACKS, "recorder"), (CALLBACKS, "fault")):
        registry.unregister(name)


def test_a_registered_loss_term_trains_its_module_and_is_logged(tmp_path: Path, registered) -> None:
    plain = train(tmp_path / "plain")
    result = train(tmp_path / "term", methods=["center:weight=0.5"])
    record = result.history[-1]
    assert "loss_center" in record and "loss_ce" in record and "loss_center" not in plain.history[-1]
    saved = ckpt.load(tmp_path / "term" / "checkpoints" / ckpt.LAST)
    assert saved["terms"]["center"]["center"].abs().sum() > 0  # the term's own parameter trained
    assert int(saved["terms"]["center"]["batches"]) == 3 * 6
    assert result.history[-1]["train_loss"] != plain.history[-1]["train_loss"]


def test_unknown_term_or_callback_is_one_clear_line() -> None:
    with pytest.raises(Exception, match=r"method 'centre' is not known; did you mean center"):
        LOSS_TERMS.register("center", CenterPull, replace=True)
        try:
            LOSS_TERMS.check("centre:weight=1")
        finally:
            LOSS_TERMS.unregister("center")


def test_a_registered_callback_sees_every_epoch(tmp_path: Path, registered) -> None:
    Recorder.seen = []
    train(tmp_path / "run", callbacks=["recorder:tag=r"])
    assert [s.split(":")[:2] for s in Recorder.seen] == [["r", "1"], ["r", "2"], ["r", "3"]]


def test_bitfit_trains_only_biases_and_head(tmp_path: Path) -> None:
    before = ToyModel().state_dict()
    result = train(tmp_path / "bitfit", adapter="bitfit")
    after = result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"features.0.bias", "features.2.bias", "head.weight", "head.bias"}
    assert result.trainable_parameters == 16 + 16 + 16 * 3 + 3
    assert "bitfit" in ADAPTERS.names()


def test_checkpoint_loads_without_unpickling_and_old_pickles_are_refused(tmp_path: Path) -> None:
    train(tmp_path / "run", epochs=1)
    directory = tmp_path / "run" / "checkpoints"
    state = ckpt.load(directory / ckpt.LAST)
    assert state["state"]["epoch"] == 1 and isinstance(state["rng"]["python"], tuple)
    (directory / ckpt.LAST).unlink()
    marker = tmp_path / "pwned"
    (directory / ckpt.PICKLED_V1).write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # a pickle that runs a shell command
    with pytest.raises(CheckpointError, match="never loaded"):
        ckpt.load(directory / ckpt.LAST)
    (directory / ckpt.LAST).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match="damaged|not a transferkit"):
        ckpt.load(directory / ckpt.LAST)
    assert not marker.exists()


def test_ctrl_c_in_process_then_resume_matches_with_a_stateful_term(tmp_path: Path, registered) -> None:
    full = train(tmp_path / "full", methods=["center"])
    with pytest.raises(Interrupted):
        train(tmp_path / "cut", methods=["center"], callbacks=["fault:at=2:3,action=interrupt"])
    saved = ckpt.load(tmp_path / "cut" / "checkpoints" / ckpt.LAST)
    assert saved["state"]["epoch"] == 1 and saved["state"]["step"] == 3
    resumed = train(tmp_path / "cut", resume=True, methods=["center"])
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    last = ckpt.load(tmp_path / "cut" / "checkpoints" / ckpt.LAST)
    assert int(last["terms"]["center"]["batches"]) == 3 * 6  # the term's state came back, not restarted


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from faults import FaultInjection
from test_train_seams import CALLBACKS, CenterPull, LOSS_TERMS, train
from pathlib import Path
LOSS_TERMS.register("center", CenterPull)
CALLBACKS.register("fault", FaultInjection)
train(Path({out!r}), methods=["center"], callbacks=["fault:at=3:2"])
"""


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, registered) -> None:
    full = train(tmp_path / "full", methods=["center"])
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "killed"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    resumed = train(tmp_path / "killed", resume=True, methods=["center"])
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert resumed.best_metric == full.best_metric


def test_options_that_would_do_nothing_are_refused(tmp_path: Path) -> None:
    from transferkit.errors import TrainingError, TransferkitError

    with pytest.raises(TrainingError, match=r"last-k:99: this backbone has only 2 blocks; use last-k:2"):
        train(tmp_path / "k", strategy="last-k:99")
    with pytest.raises(TransferkitError, match=r"gradual with epochs 1 and freeze_epochs 1: every epoch would train "
                                                r"the head only"):
        parse_strategy("gradual").phases(1, freeze_epochs=1)
    assert [p.name for p in parse_strategy("gradual").phases(1, freeze_epochs=0)] == ["all"]


def test_resuming_a_finished_run_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    from transferkit.errors import TrainingError

    train(tmp_path / "done", epochs=1)
    last = tmp_path / "done" / "checkpoints" / ckpt.LAST
    before = last.read_bytes()
    with pytest.raises(TrainingError, match=r"already finished \(epoch 1/1\); nothing to resume"):
        train(tmp_path / "done", resume=True, epochs=1)
    assert last.read_bytes() == before


def test_progress_rate_after_a_resume_counts_only_new_items(capsys, monkeypatch) -> None:
    from transferkit import progress as progress_module

    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    clock = iter([0.0, 10.0])  # start, then 10 s later for the one report
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    with progress_module.progress(100, "epoch", done=90) as advance:
        advance(10)
    assert "epoch: 100/100 (1.00 s each)" in capsys.readouterr().err  # 10 new items in 10 s, not 100
