"""Unsupervised domain adaptation (issue 13): each method lowers its own discrepancy on a toy shift, gradient
reversal flips the sign, no target label is ever read, resume is exact, the bottleneck folds into a plain
linear head, target folders are read or refused in one line, and `transferkit adapt` saves a loadable run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FAST, make_folder, run_main
from faults import FaultInjection

from transferkit.cli.adapt import SELECT_CHOICES
from transferkit.config import RunConfig
from transferkit.errors import DataError, TrainingError
from transferkit.heads.linear import probe_from_linear
from transferkit.methods.domain.bottleneck import BottleneckHead, BottleneckModel
from transferkit.methods.domain.discriminator import DomainDiscriminator
from transferkit.adapt.experiment import Adaptation, Candidate, choose, data_defaults
from transferkit.methods.domain.grl import ramp, reverse_gradient
from transferkit.methods.domain.kernels import coral, mk_mmd
from transferkit.adapt.selection import CRITERIA, Evidence, all_scores
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.modalities.image.target import NO_LABEL, read_target, target_train_data
from transferkit.plugins import CALLBACKS
from transferkit.strategies import parse_strategy
from transferkit.train import state as ckpt
from transferkit.train.data import EpochSampler, TrainData
from transferkit.train.loop import Interrupted, train_model

DIM = 4
N, SHIFT = 256, 1.5  # samples per domain; how far the target blobs moved (along axis 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Toy tensors gain nothing from a second thread, and on a shared 2-core machine OpenMP's waiting makes
    each tiny op ten times slower; restored for the tests after these."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyNet(nn.Module):
    """8 inputs -> 16 pooled features -> head; the backbone is two Linear blocks."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Linear(16, classes)

    @property
    def backbone(self) -> nn.Module:
        return self.features


def blobs(n: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes apart on axis 0; the target domain is the same blobs moved ``shift`` along axis 1 and
    sheared towards axis 0."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, DIM, generator=generator) * 0.6
    x[:, 0] += labels.float() * 4 - 2
    if shift:  # turned as well as moved: a translation alone, each domain's own batch statistics would undo
        turn = torch.tensor([[0.8, 0.6], [-0.6, 0.8]])
        x[:, :2] = x[:, :2] @ turn
        x[:, 1] += shift
    return x, labels


def toy_data(target_labels: list[int] | None = None) -> TrainData:
    xs, ys = blobs(N, 0.0, 0)
    xt, _ = blobs(N, SHIFT, 1)
    fake = target_labels if target_labels is not None else [NO_LABEL] * len(xt)
    unlabelled = TrainData(torch.utils.data.TensorDataset(xt, torch.tensor(fake)), EpochSampler(fake, 5), fake,
                           deterministic=True)
    return TrainData(torch.utils.data.TensorDataset(xs, ys), EpochSampler(ys.tolist(), 0), ys.tolist(),
                     deterministic=True, unlabelled=unlabelled)


def predict(model: nn.Module, x: torch.Tensor, accelerator) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.cpu().eval()(x), dim=1).numpy()


def fit(out: Path, methods: list[str], resume: bool = False, callbacks: list[str] = (), epochs: int = 8,
        data: TrainData | None = None):
    cfg = RunConfig(epochs=epochs, batch_size=16, lr=1e-2, workers=0, precision="no", strategy="finetune",
                    augment="none", bn="train", methods=methods, callbacks=list(callbacks))
    # no validation data: the last epoch comes back (source accuracy saturates at once on this toy, so the best
    # epoch by it would be the first, before any adaptation)
    return train_model(BottleneckModel(ToyNet(), 8), cfg, parse_strategy(cfg.strategy), data or toy_data(), None, 2,
                       out, resume=resume, predict=predict)


@torch.no_grad()
def domain_features(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each domain's features as the terms saw them in training: one domain per forward, BatchNorm on that
    batch's statistics (the loop forwards the two streams apart)."""
    model.train()
    source, _ = blobs(N, 0.0, 0)
    target, _ = blobs(N, SHIFT, 1)
    return model(source, with_features=True)[0], *model(target, with_features=True)


def target_entropy(logits: torch.Tensor) -> float:
    p = torch.softmax(logits, dim=1)
    return float(-(p * torch.log(p.clamp(min=1e-12))).sum(dim=1).mean())


def own_domain_loss(name: str):
    """How far an adversarial term's own discriminator beats chance (a loss of ln 2) in the last epoch: lower,
    the domains look more alike to it."""
    return lambda result: math.log(2) - result.history[-1][f"loss_{name}"]


def measured(fn):
    return lambda result: fn(*domain_features(result.model))


# spec -> (the baseline's methods, the discrepancy the spec minimises). CORAL, MMD and self-training are measured
# on the trained model against a source-only one. DANN and CDAN are measured by their own discriminator, against
# the same discriminator trained beside features that are not pushed back (reversal coefficient 0: gamma=0).
CASES = {
    "coral": ([], measured(lambda s, t, logits: float(coral(s, t)))),
    "mmd": ([], measured(lambda s, t, logits: float(mk_mmd(s, t)))),
    "pseudo-label:threshold=0.8": ([], measured(lambda s, t, logits: target_entropy(logits))),
    "dann:hidden=32": (["dann:hidden=32,gamma=0"], own_domain_loss("dann")),
    "cdan:hidden=32": (["cdan:hidden=32,gamma=0"], own_domain_loss("cdan")),
}


@pytest.mark.parametrize("spec", list(CASES))
def test_each_method_lowers_its_own_discrepancy_on_a_toy_shift(tmp_path: Path, spec: str) -> None:
    baseline, measure = CASES[spec]
    before = measure(fit(tmp_path / "baseline", baseline))
    result = fit(tmp_path / "run", [spec])
    after = measure(result)
    assert after < before - 0.2 * abs(before), (spec, before, after)


def test_gradient_reversal_flips_the_sign_and_the_ramp_rises_from_zero() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    (reverse_gradient(x, 0.25) * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -0.25 * torch.arange(3.0).expand(5, 3))
    assert torch.equal(reverse_gradient(x, 0.25), x)
    assert ramp(0.0) == 0.0 and 0.99 < ramp(1.0) < 1.0 and ramp(0.1) < ramp(0.5) < ramp(0.9)
    # the discriminator learns to tell the domains apart while the features it reads get the opposite push
    features = torch.randn(8, 4, requires_grad=True)
    discriminator = DomainDiscriminator(4, 8)
    plain = torch.autograd.grad(discriminator(features).sum(), features)[0]
    flipped = torch.autograd.grad(discriminator(reverse_gradient(features)).sum(), features)[0]
    assert torch.allclose(flipped, -plain)


def test_no_target_label_is_read_during_training(tmp_path: Path) -> None:
    # labels far out of range: one-hot encoding or cross-entropy on them would raise
    poisoned = toy_data(target_labels=[10**6] * N)
    result = fit(tmp_path / "run", ["dann:hidden=16", "pseudo-label:threshold=0.5,warmup=0"], epochs=2,
                 data=poisoned)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["train_loss"])
    assert result.history[-1]["loss_pseudo-label"] > 0  # the target stream did train (on pseudo-labels)


def test_the_target_stream_never_carries_the_folders_labels(tmp_path: Path) -> None:
    target = make_folder(tmp_path / "target", {"": 2})
    read = read_target(target, ["blue", "red"])
    assert read.labelled and sorted(set(read.labels)) == [0, 1]
    data = target_train_data(read.items, Preprocessing(32, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0),
                             RunConfig(workers=0, augment="none"))
    assert data.labels == [NO_LABEL] * 4 and {data.dataset[i][1] for i in range(4)} == {NO_LABEL}


def test_resume_is_exact_with_stateful_terms(tmp_path: Path) -> None:
    CALLBACKS.register("fault", FaultInjection, replace=True)
    try:
        methods = ["dann:hidden=16", "pseudo-label:threshold=0.6"]
        full = fit(tmp_path / "full", methods, epochs=3)
        with pytest.raises(Interrupted):
            fit(tmp_path / "cut", methods, epochs=3, callbacks=["fault:at=3:2,action=interrupt"])
        saved = ckpt.load(tmp_path / "cut" / "checkpoints" / ckpt.LAST)
        assert saved["terms"]["pseudo-label"]["_extra_state"]["epoch"] == 2  # this epoch's teacher is stored
        resumed = fit(tmp_path / "cut", methods, epochs=3, resume=True)
    finally:
        CALLBACKS.unregister("fault")
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_the_bottleneck_folds_into_one_linear_head() -> None:
    torch.manual_seed(0)
    head = BottleneckHead(6, 4, 3)
    norm = head.bottleneck[1]
    norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2)
    head.eval()
    x = torch.randn(10, 6)
    probe = probe_from_linear(head)
    assert probe.weight.shape == (3, 6)
    assert np.allclose(head(x).detach().numpy(), x.numpy() @ probe.weight.T + probe.bias, atol=1e-5)


def test_target_folders_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    for i, colour in enumerate(["red", "blue"]):
        make_folder(tmp_path / "tmp", {"": 1})
        flat.mkdir(exist_ok=True)
        (tmp_path / "tmp" / colour / "img_0.png").rename(flat / f"{i}.png")
    read = read_target(flat, ["blue", "red"])
    assert not read.labelled and len(read.items) == 2
    with pytest.raises(DataError, match="no labels"):
        read.scored()
    mixed = make_folder(tmp_path / "mixed", {"": 1})
    (mixed / "red" / "img_0.png").rename(mixed / "loose.png")
    with pytest.raises(DataError, match=r"mixed: holds both images \(loose.png\) and sub-folders"):
        read_target(mixed, ["blue", "red"])
    other = make_folder(tmp_path / "other", {"": 1}, {"green": (0, 200, 0), "red": (200, 0, 0)})
    with pytest.raises(DataError, match="class 'green' is not one the model knows"):
        read_target(other, ["blue", "red"])
    with pytest.raises(DataError, match="target folder not found"):
        read_target(tmp_path / "missing", ["blue", "red"])


def test_a_term_without_a_target_stream_says_what_to_do(tmp_path: Path) -> None:
    data = toy_data()
    data.unlabelled = None
    with pytest.raises(TrainingError, match="method coral adapts to a target domain.*transferkit adapt"):
        fit(tmp_path / "run", ["coral"], data=data)


def evidence(shift: float, confident: float) -> Evidence:
    rng = np.random.default_rng(0)
    source, val, target = rng.normal(size=(200, 3)), rng.normal(size=(100, 3)), rng.normal(shift, 1, (200, 3))
    labels = (val[:, 0] > 0).astype(int)
    val_proba = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
    target_proba = np.tile([confident, 1 - confident], (200, 1))
    return Evidence(val_proba, labels, target_proba, source, val, target)


def test_selection_criteria_and_choice_read_no_target_label() -> None:
    same = all_scores(evidence(0.0, 0.9))
    assert same["source-val"] == 1.0 and abs(same["dev"] + np.log(0.9)) < 0.05  # no shift: DEV is the val loss
    assert all_scores(evidence(0.0, 0.99))["entropy"] < same["entropy"]
    balanced = evidence(0.0, 0.99)
    balanced.target_proba[::2] = balanced.target_proba[::2, ::-1]  # half the target predicted as each class
    # a collapsed model (every target image the same class) is as confident, and info-max sees through it
    assert all_scores(balanced)["entropy"] == pytest.approx(all_scores(evidence(0.0, 0.99))["entropy"])
    assert all_scores(balanced)["info-max"] > all_scores(evidence(0.0, 0.99))["info-max"] + 0.5

    class Fitted:
        def __init__(self, dev: float) -> None:
            self.metrics_ = {"selection": {"dev": dev, "entropy": 1.0, "source-val": 0.9}}

    runs = [Candidate(m, s, Fitted(d), 1.0) for m, s, d in
            [("dann", 0, 0.2), ("dann", 1, 0.9), ("mmd", 0, 0.4), ("mmd", 1, 0.5)]]
    chosen = choose(runs, "dev")  # mmd's mean (0.45) beats dann's (0.55), although dann has the best single run
    assert (chosen.method, chosen.seed) == ("mmd", 0)
    record = Adaptation(runs, "dev", chosen).record()
    assert record["chosen"] == {"method": "mmd", "seed": 0} and record["summary"][1]["chosen"]
    for run, info in zip(runs, [2.0, 1.0, 1.6, 1.7]):
        run.classifier.metrics_["selection"]["info-max"] = info
    chosen = choose(runs, "info-max")  # higher is better: mmd's mean (1.65) beats dann's (1.5), then mmd's seed 1
    assert (chosen.method, chosen.seed) == ("mmd", 1)


def test_adapt_command_saves_a_plain_run_and_reports_the_target(tmp_path: Path) -> None:
    from transferkit.cli.app import app
    from transferkit.estimators import load_classifier
    from typer.testing import CliRunner

    source = make_folder(tmp_path / "source", {"": 6})
    target = make_folder(tmp_path / "target", {"": 3}, {"red": (250, 90, 90), "blue": (90, 110, 250)})
    out = tmp_path / "run"
    runner = CliRunner()
    done = runner.invoke(app, ["adapt", str(source), "--target", str(target), "--candidate", "dann", "--out", str(out),
                               "--epochs", "1", "--image-size", str(FAST["image_size"]), "--batch-size", "8",
                               "--workers", "0", "--precision", "no", "--bottleneck", "16", "--json"])
    assert done.exit_code == 0, done.output[-3000:]
    assert "val 0 (2 held back for model selection: 0.2 of train" in done.output  # not "val 0 (0.2 of train...)"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapt"]["criterion"] == "info-max" and metrics["adapt"]["chosen"] == {"method": "dann", "seed": 0}
    assert metrics["target"]["n"] == 6 and metrics["target"]["transductive"]
    assert set(metrics["selection"]) == {"source-val", "entropy", "info-max", "dev"}
    assert metrics["val"]["items"] and len(metrics["val"]["correct"]) == metrics["val"]["n"]  # compare pairs it
    loaded = load_classifier(out)  # a plain image run: folded head on the backbone's pooled features
    assert loaded.head_.weight.shape[1] == 1280
    assert abs(loaded.score(str(target)) - metrics["target"]["accuracy"]) < 1e-9


def test_only_domain_terms_bring_the_target_stream() -> None:
    from transferkit.adapt.estimator import reads_target

    assert all(reads_target(m) for m in ("coral", "mmd", "dann", "cdan", "pseudo-label:threshold=0.9"))
    assert not any(reads_target(m) for m in ("l2sp", "lwf"))  # beside --target they would only pay a forward


def test_adapt_select_choices_are_the_criteria() -> None:
    assert SELECT_CHOICES == tuple(CRITERIA)  # the CLI reads the numpy-free table selection.py scores by


@pytest.mark.parametrize(("args", "wanted"), [
    ([], "target folder not found"),
    (["--seeds", "0,x"], "--seeds 0,x: expected integers >= 0 separated by commas"),
    (["--strategy", "gradual"], "strategy gradual starts the head from a linear probe"),
    (["--select", "best"], "--select 'best': choose one of"),
    (["--candidate", "dan"], "method 'dan' is not known; did you mean dann"),
])
def test_adapt_bad_input_is_one_line(args: list[str], wanted: str, tmp_path: Path, monkeypatch, capsys) -> None:
    source = make_folder(tmp_path / "source", {"": 2})
    code, _, err = run_main(monkeypatch, capsys, "adapt", str(source), "--target", tmp_path / "nope", "--out",
                            tmp_path / "run", "--candidate", "dann", *args)
    assert code == 2 and err.startswith("error: ") and wanted in err, err
    assert err.strip().count("\n") == 0


def test_adapt_method_is_a_deprecated_name_for_candidate(tmp_path: Path, monkeypatch, capsys) -> None:
    """``adapt --method`` (a loss term in ``train``) still names a candidate, with one warning line."""
    source = make_folder(tmp_path / "source", {"": 2})
    code, _, err = run_main(monkeypatch, capsys, "adapt", str(source), "--target", tmp_path / "nope", "--out",
                            tmp_path / "run", "--method", "dan")
    warning, error = err.strip().split("\n")
    assert code == 2 and warning == "warning: adapt --method is deprecated, use --candidate (the same value)"
    assert error.startswith("error: method 'dan' is not known; did you mean dann"), err


def test_train_with_a_target_scores_it_and_adapts_with_a_term(tmp_path: Path) -> None:
    """``train --target``: the source-only row (a probe scored on the target) and a fine-tune whose domain term
    reads the target stream; both save plain runs."""
    from transferkit.cli.app import app
    from typer.testing import CliRunner

    source = make_folder(tmp_path / "source", {"": 6})
    target = make_folder(tmp_path / "target", {"": 3}, {"red": (250, 90, 90), "blue": (90, 110, 250)})
    size = ["--image-size", str(FAST["image_size"])]
    runner = CliRunner()
    done = runner.invoke(app, ["train", str(source), "--target", str(target), "--out", str(tmp_path / "probe"),
                               *size])
    assert done.exit_code == 0, done.output[-3000:]
    assert "target " in done.output and "(n=6)" in done.output
    probe = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert probe["target"]["n"] == 6 and probe["adapt"]["methods"] == [] and probe["strategy"] == "linear-probe"
    done = runner.invoke(app, ["train", str(source), "--target", str(target), "--out", str(tmp_path / "mmd"),
                               "--strategy", "finetune", "--method", "mmd", "--epochs", "1", "--batch-size", "8",
                               "--workers", "0", "--precision", "no", *size])
    assert done.exit_code == 0, done.output[-3000:]
    tuned = json.loads((tmp_path / "mmd" / "metrics.json").read_text())
    assert tuned["adapt"]["bottleneck"] == 0 and "loss_mmd" in tuned["history"][0]


def test_train_target_on_text_data_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\n" + "".join(f"sample {i},{'ab'[i % 2]}\n" for i in range(8)))
    target = make_folder(tmp_path / "target", {"": 1})
    code, _, err = run_main(monkeypatch, capsys, "train", str(texts), "--target", str(target), "--out",
                            str(tmp_path / "run"))
    assert code == 2 and "only image data can have a target domain" in err, err
    assert err.strip().count("\n") == 0


# -- issue 23, section 0: a flat (unlabelled) target, and nothing trained is lost ------------------------------
FLAT = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--precision", "no",
        "--bottleneck", "16"]


def flat_target(tmp_path: Path) -> tuple[Path, Path]:
    from conftest import make_image

    source = make_folder(tmp_path / "source", {"": 6})
    for i in range(6):
        make_image(tmp_path / "target" / f"x{i}.png", (200, 60, 60) if i % 2 else (60, 60, 200), seed=i)
    return source, tmp_path / "target"


def test_adapt_command_with_an_unlabelled_target_and_several_candidates_saves_them_all(tmp_path: Path) -> None:
    from transferkit.cli.app import app
    from transferkit.runs.folders import is_run_folder
    from typer.testing import CliRunner

    source, target = flat_target(tmp_path)
    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["adapt", str(source), "--target", str(target), "--candidate", "source-only",
                                    "--candidate", "coral", "--out", str(out), *FLAT])
    assert done.exit_code == 0, done.output[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "target" not in metrics and metrics["target_images"] == "target 6 images, unlabelled"
    assert [c["target_accuracy"] for c in metrics["adapt"]["candidates"]] == [None, None]
    kept = sorted(p.name for p in (out / "candidates").iterdir())
    assert kept == ["1-source-only-seed-0", "2-coral-seed-0"]
    assert all(is_run_folder(out / "candidates" / k) for k in kept)
    assert is_run_folder(out)  # the chosen run with its candidates is still one run folder (--overwrite replaces it)


def test_domain_adapt_classifier_fits_an_unlabelled_target(tmp_path: Path) -> None:
    from transferkit.adapt.estimator import DomainAdaptClassifier

    source, target = flat_target(tmp_path)
    clf = DomainAdaptClassifier(target=str(target), methods=["mmd"], epochs=1, image_size=32, batch_size=8,
                                workers=0, precision="no", bottleneck=16).fit(str(source))
    assert "target" not in clf.metrics_ and set(clf.metrics_["selection"]) == set(CRITERIA)
    assert len(clf.predict(str(target))) == 6


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_a_failure_after_training_keeps_the_trained_candidates_and_says_where(seeds, tmp_path: Path,
                                                                               monkeypatch) -> None:
    from transferkit.errors import TransferkitError
    from transferkit.adapt import experiment
    from transferkit.runs.folders import is_run_folder

    def broken(*args, **kwargs):
        raise RuntimeError("injected after training")

    monkeypatch.setattr(experiment, "choose", broken)
    source, target = flat_target(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(TransferkitError, match="injected after training") as caught:
        experiment.adapt(str(source), str(target), ["source-only"], seeds, out=out, bottleneck=16, epochs=1,
                         image_size=32, batch_size=8, workers=0, precision="no")
    message = str(caught.value)
    if len(seeds) == 1:  # the one model is the run
        assert f"saved in {out}" in message and is_run_folder(out) and (out / "model.safetensors").is_file()
    else:
        assert f"2 candidate(s) trained so far are saved in {out / 'candidates'}" in message
        assert all(is_run_folder(p) for p in (out / "candidates").iterdir())


def test_adapt_bottleneck_is_bounded_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    source = make_folder(tmp_path / "source", {"": 2})
    code, _, err = run_main(monkeypatch, capsys, "adapt", str(source), "--target", str(source), "--out",
                            tmp_path / "run", "--candidate", "dann", "--bottleneck", "100000000")
    assert code == 2 and err.strip() == "error: --bottleneck=100000000: expected an integer in [0, 16384]", err
    assert not (tmp_path / "run").exists()


def test_adapt_defaults_follow_what_the_source_data_settles(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "digits", {"": 4})  # 48 px images: twice their side, not 224
    derived = data_defaults(data, {})
    assert derived["image_size"][0] == 96 and derived["bn"][0] == "train" and derived["image_size"][1]
    assert "image_size" not in data_defaults(data, {"image_size": 64, "bn": "frozen"})  # what is given stays
