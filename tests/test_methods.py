"""Adapters (LoRA, IA3, BitFit), L2-SP, LwF and distillation: each changes what it should, saves what it should,
and resumes exactly. Tiny images (32 px), a few steps each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_finetune import SMALL, SMALL_ARGS, cli, make_folder
from transferkit.errors import TransferkitError
from transferkit.estimators import ImageClassifier, load_classifier
from transferkit.runs.rundir import read_tensors


@pytest.fixture()
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    return make_folder(tmp_path / "data")


def lite0_model(n_classes: int = 2):
    from transferkit.modalities import IMAGE
    from transferkit.modalities.image.backbones import resolve_backbone

    torch.manual_seed(0)
    return IMAGE.build_model(resolve_backbone("efficientnet_lite0", input_size=32), n_classes)


# -- adapters ------------------------------------------------------------------------------------------------
def test_lora_trains_only_adapter_and_head_tensors_and_merges_to_the_same_outputs() -> None:
    from transferkit.config import RunConfig
    from transferkit.methods.peft_adapters import LoraAdapter
    from transferkit.modalities import IMAGE
    from transferkit.strategies import parse_strategy
    from transferkit.train.phases import apply_phase

    model = lite0_model()
    adapter = LoraAdapter(r=8)
    adapter.attach(model)
    assert len(adapter.chosen) == 32 and all(n.rsplit(".", 1)[-1] in ("conv_pw", "conv_pwl", "conv_head")
                                             for n in adapter.chosen)
    strategy = parse_strategy("finetune")
    apply_phase(model, strategy.phases(1, 0)[0], RunConfig(), strategy, adapter, "frozen", IMAGE.defaults.training)
    training = [n for n, p in model.named_parameters() if p.requires_grad]
    assert training and all("lora_" in n or n.startswith("head.") for n in training)
    backbone_share = sum(p.numel() for n, p in model.backbone.named_parameters() if p.requires_grad)
    assert 0.04 < backbone_share / 3_400_000 < 0.06  # r=8: about 5% of Lite0
    for name, p in model.named_parameters():  # a trained adapter: B away from its zero start
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    images = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        before = model(images)
        merged = adapter.merge(model)
        after = merged(images)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(before, after, atol=1e-4)


def test_adapter_target_errors_name_the_layers_that_exist() -> None:
    from transferkit.methods.peft_adapters import LoraAdapter

    with pytest.raises(TransferkitError, match=r"matches no linear or convolution layer.*conv_pw"):
        LoraAdapter(targets="attention").attach(lite0_model())
    with pytest.raises(TransferkitError, match="depthwise/grouped"):
        LoraAdapter(targets="conv_dw").attach(lite0_model())
    with pytest.raises(TransferkitError, match="not a regular expression"):
        LoraAdapter(targets="(").attach(lite0_model())


def test_lora_run_keeps_merged_model_and_adapter_file_and_both_load_the_same(data: Path, tmp_path: Path) -> None:
    from transferkit.train.adapters import apply_adapter_file

    out = tmp_path / "lora"
    clf = ImageClassifier(strategy="gradual", epochs=3, freeze_epochs=1, adapter="lora:r=4,alpha=8", lr=3e-3,
                          **SMALL).fit(data, out=out)
    clf.save(out)
    phases = [r["phase"] for r in clf.metrics_["history"]]
    assert phases == ["head", "all", "all"]  # gradual + lora: the probe head first, then the adapters
    assert (out / "adapter.safetensors").stat().st_size < 400_000
    assert json.loads((out / "adapter.json").read_text())["r"] == 4
    merged = read_tensors(out / "model.safetensors")
    assert not any("lora" in k for k in merged)
    loaded = load_classifier(out)
    images = sorted((data / "val").rglob("*.png"))
    expected = loaded.predict_proba(images)
    rebuilt = apply_adapter_file(lite0_model(), out)  # pretrained weights + the adapter alone
    from transferkit.modalities.base import Split
    from transferkit.modalities.image.preprocessing import Preprocessing
    from transferkit.modalities.image.training import decode_split

    pixels, _, _ = decode_split(Split(images, [0] * len(images)), Preprocessing.from_dict(
        json.loads((out / "preprocessing.json").read_text())), 8, 0)
    with torch.no_grad():
        proba = torch.softmax(rebuilt(torch.from_numpy(pixels)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-4)


def test_bitfit_changes_only_biases(data: Path, tmp_path: Path) -> None:
    clf = ImageClassifier(strategy="finetune", epochs=1, adapter="bitfit", lr=1e-2, **SMALL).fit(data)
    start = lite0_model().features.state_dict()
    tuned = clf.net_.state_dict()
    changed = {k for k in start if k.endswith(("weight", "bias")) and not torch.equal(start[k], tuned[k])}
    assert changed and all(k.endswith("bias") for k in changed)


# -- regularised transfer ------------------------------------------------------------------------------------
def test_l2sp_penalty_is_zero_at_the_start_and_grows_with_drift() -> None:
    from transferkit.config import RunConfig
    from transferkit.methods.l2sp import L2SP
    from transferkit.train.losses import Batch, Outputs, TermSetup

    model = lite0_model()
    term = L2SP(alpha=1.0, beta=0.0)
    term.setup(TermSetup(model, RunConfig(), None, 2, torch.device("cpu")))
    outputs = Outputs(torch.zeros(1, 1280), torch.zeros(1, 2))
    batch = Batch(None, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    assert float(term(batch, outputs).detach()) == 0.0
    weight = model.backbone.conv_head.weight
    with torch.no_grad():
        weight.add_(0.1)
    penalty = term(batch, outputs)
    assert float(penalty.detach()) == pytest.approx(0.5 * 0.01 * weight.numel(), rel=1e-3)
    penalty.backward()
    assert torch.all(weight.grad > 0)  # the gradient pulls back towards the pretrained weights, not to zero


def test_lwf_at_alpha_one_keeps_the_source_heads_predictions(data: Path) -> None:
    common = dict(strategy="finetune", epochs=3, lr=3e-3, augment="none", **SMALL)
    plain = ImageClassifier(**common).fit(data).metrics_["source_retention"]
    kept = ImageClassifier(methods=["lwf:alpha=1.0,temperature=2"], **common).fit(data)
    retention = kept.metrics_["source_retention"]
    assert retention["kl"] < plain["kl"] / 2 and retention["agreement"] >= plain["agreement"]
    assert kept.source_head_.out_features == 1000


def test_lwf_needs_a_source_head(data: Path) -> None:
    with pytest.raises(TransferkitError, match="no source classifier"):
        ImageClassifier(strategy="scratch", epochs=1, methods=["lwf"], **SMALL).fit(data)


# -- distillation --------------------------------------------------------------------------------------------
def test_distillation_at_alpha_one_moves_the_student_to_the_teachers_soft_targets(monkeypatch, tmp_path: Path) -> None:
    import test_train_seams as toy
    from transferkit.methods import distill
    from transferkit.strategies import parse_strategy
    from transferkit.train.loop import train_model

    data, val = toy.toy_data()
    data.items = [f"item{i}" for i in range(len(data))]
    soft = np.random.default_rng(0).dirichlet(np.ones(3) * 2, size=len(data)).astype(np.float32)

    class Teacher:  # what load_teacher returns: features and a head with predict_proba, for the items
        head_ = type("Head", (), {"predict_proba": staticmethod(lambda features: soft)})

        @staticmethod
        def features(items):
            return np.zeros((len(items), 4), np.float32)

    monkeypatch.setattr(distill, "load_teacher", lambda teacher, setup: Teacher)
    inputs = torch.stack([data.dataset[i][0] for i in range(len(data))])

    def gap(**changes) -> float:
        cfg = toy.config(epochs=60, lr=3e-2, **changes)
        model = train_model(toy.ToyModel(), cfg, parse_strategy(cfg.strategy), data, val, 3, tmp_path / str(changes),
                            predict=toy.predict).model
        proba = toy.predict(model, inputs, None)
        return float((soft * (np.log(soft) - np.log(proba))).sum(1).mean())

    alone, student = gap(), gap(methods=["distill:teacher=t,alpha=1,temperature=1"])
    assert student < alone / 4, (student, alone)  # the student follows the soft targets; labels alone do not


def test_distillation_teacher_with_other_classes_is_one_line(data: Path, tmp_path: Path) -> None:
    other = make_folder(tmp_path / "three", classes=3)
    ImageClassifier(image_size=32, engine="torch", workers=0).fit(other).save(tmp_path / "teacher3")
    with pytest.raises(TransferkitError, match="same classes"):
        ImageClassifier(strategy="finetune", epochs=1, methods=[f"distill:teacher={tmp_path / 'teacher3'}"],
                        **SMALL).fit(data)


def test_methods_resume_exactly_after_ctrl_c(data: Path, tmp_path: Path) -> None:
    args = ("train", str(data), "--strategy", "finetune", "--epochs", "2", "--seed", "5", "--adapter", "lora:r=2",
            "--method", "l2sp", "--method", "lwf:alpha=0.3", "--augment", "none", *SMALL_ARGS)
    straight = cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    stopped = cli(*args, "--out", str(tmp_path / "stopped"), fault="at=2:2,action=interrupt")
    assert stopped.returncode == 130, stopped.stderr
    resumed = cli(*args, "--out", str(tmp_path / "stopped"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    for key in ("train_loss", "loss_l2sp", "loss_lwf"):
        assert [r[key] for r in a["history"]] == pytest.approx([r[key] for r in b["history"]], rel=1e-5)
    assert a["source_retention"] == b["source_retention"]
    ta, tb = read_tensors(tmp_path / "straight" / "model.safetensors"), read_tensors(tmp_path / "stopped" / "model.safetensors")
    assert "source_head.weight" in ta
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6)


def test_lora_on_a_text_encoder_targets_attention_and_merges() -> None:
    from transferkit.methods.peft_adapters import LoraAdapter
    from transferkit.modalities import TEXT
    from transferkit.modalities.text.backbone import resolve_text_backbone

    torch.manual_seed(0)
    model = TEXT.build_model(resolve_text_backbone("all-MiniLM-L6-v2"), 2)
    adapter = LoraAdapter(r=4)
    adapter.attach(model)
    assert {n.rsplit(".", 1)[-1] for n in adapter.chosen} == {"query", "key", "value", "dense"}
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    batch = {"input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 102]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        before = model(batch)
        after = adapter.merge(model)(batch)
    assert torch.allclose(before, after, atol=1e-4)


def test_train_from_a_run_grows_the_head_with_an_adapter_and_scores_the_old_data(data: Path, tmp_path: Path) -> None:
    parent = ImageClassifier(strategy="finetune", epochs=1, **SMALL).fit(data)
    parent.save(tmp_path / "parent")
    grown = make_folder(tmp_path / "grown", classes=3)
    done = cli("train", str(grown), "--from", str(tmp_path / "parent"), "--strategy", "gradual", "--epochs", "2",
               "--adapter", "lora:r=2", "--out", str(tmp_path / "child"), *SMALL_ARGS)
    assert done.returncode == 0, done.stderr
    assert "head grows by 1 class(es): c2" in done.stderr
    metrics = json.loads((tmp_path / "child" / "metrics.json").read_text())
    record = metrics["parent"]
    assert record["run"] == str((tmp_path / "parent").resolve()) and record["classes"] == ["c0", "c1"]
    assert record["old_val_before"] == parent.metrics_["val"]["accuracy"] and 0 <= record["old_val_after"] <= 1
    assert record["old_val_n"] == 6 and (tmp_path / "child" / "adapter.safetensors").is_file()
    assert json.loads((tmp_path / "child" / "classes.json").read_text()) == ["c0", "c1", "c2"]
    fewer = cli("train", str(data), "--from", str(tmp_path / "child"), "--strategy", "finetune", "--epochs", "1",
                "--out", str(tmp_path / "again"), *SMALL_ARGS)
    assert fewer.returncode == 2 and "c2" in fewer.stderr and "Traceback" not in fewer.stderr


# -- declared bounds (issue 23, section 3) -------------------------------------------------------------------
def registries():
    from transferkit.plugins import ADAPTERS, CALLBACKS, LOSS_TERMS

    return (ADAPTERS, CALLBACKS, LOSS_TERMS)


def declared_options():
    """(registry, part, option, bound) for every option of every built-in part."""
    return [(registry, name, key, bound) for registry in registries() for name in registry.names()
            for key, bound in (registry.options(name) or {}).items()]


def test_every_built_in_part_declares_exactly_its_constructors_options() -> None:
    import inspect

    for registry in registries():
        for name in registry.names():
            declared = registry.options(name)
            assert declared is not None, f"{registry.kind} {name} declares no options"
            parameters = {p.name: p for p in inspect.signature(registry.factory(name)).parameters.values()
                          if p.kind is p.POSITIONAL_OR_KEYWORD}
            assert set(declared) == set(parameters), f"{registry.kind} {name}"
            for key, bound in declared.items():  # a required option is one without a default, and only that
                assert bound.required == (parameters[key].default is inspect.Parameter.empty), (name, key)


BAD_NUMBERS = ("nan", "inf", "-inf", "1e30", "-1e30", "abc", "", "99999999999999999999999")


def test_every_numeric_plug_in_option_refuses_bad_values_in_one_line_naming_it_and_its_range() -> None:
    numeric = [entry for entry in declared_options() if entry[3].kind in (int, float)]
    assert len(numeric) >= 20  # lora r/alpha/dropout, every term's weight, dann/cdan hidden, ... (not vacuous)
    for registry, name, key, bound in numeric:
        required = ",".join(f"{k}=x" for k, b in registry.options(name).items() if b.required and k != key)
        for bad in BAD_NUMBERS + (("1.5",) if bound.kind is int else ()):
            spec = f"{name}:{key}={bad}" + (f",{required}" if required else "")
            with pytest.raises(TransferkitError) as caught:
                registry.check(spec)
            message = str(caught.value)
            assert "\n" not in message and f"{key}={bad}" in message and bound.describe() in message, message
        end = bound.high if not bound.open_high else bound.low  # a value at the range's closed end is taken
        assert registry.check(f"{name}:{key}={end}" + (f",{required}" if required else ""))


def test_plug_in_specs_name_unknown_or_missing_options_before_any_import() -> None:
    from transferkit.plugins import ADAPTERS, LOSS_TERMS

    with pytest.raises(TransferkitError, match=r"adapter lora: no option 'rank'; its options: r, alpha"):
        ADAPTERS.check("lora:rank=8")
    with pytest.raises(TransferkitError, match="adapter bitfit: no option 'r'; it takes no options"):
        ADAPTERS.check("bitfit:r=8")
    with pytest.raises(TransferkitError, match="method distill: teacher= is required"):
        LOSS_TERMS.check("distill:alpha=0.5")
    with pytest.raises(TransferkitError, match=r"method cdan: entropy=maybe: expected true or false"):
        LOSS_TERMS.check("cdan:entropy=maybe")
    # a word option keeps what was typed: a teacher folder named 007 is not the number 7
    assert LOSS_TERMS.check("distill:teacher=007") == ("distill", {"teacher": "007"})


def test_every_bounded_config_field_refuses_nan_inf_huge_and_negative() -> None:
    import dataclasses

    from transferkit.bounds import Bound
    from transferkit.config import RunConfig

    bounded = [f for f in dataclasses.fields(RunConfig) if isinstance(f.metadata["valid"], Bound)]
    assert {"epochs", "lr", "batch_size", "image_size", "seed", "max_length", "grad_accum"} <= {f.name for f in bounded}
    for f in bounded:
        for bad in (float("nan"), float("inf"), -float("inf"), 10**12, -10**12, 1e300):
            with pytest.raises(TransferkitError) as caught:
                RunConfig(**{f.name: bad})
            message = str(caught.value)
            assert "\n" not in message and f"'{f.name}'" in message and f.metadata["valid"].describe() in message


def test_last_k_is_bounded() -> None:
    from transferkit.strategies import parse_strategy

    for bad in ("last-k:0", "last-k:99999", "last-k:x", "last-k:1e3", "last-k:"):
        with pytest.raises(TransferkitError, match=r"expected last-k:N with N an integer in \[1, 1000\]"):
            parse_strategy(bad)
    assert parse_strategy("last-k:1000").last_k == 1000


# -- a diverged run's folder agrees with its message (issue 23, section 5) ---------------------------------------
@pytest.mark.parametrize("good_steps", [0, 3])
def test_a_diverged_run_leaves_its_folder_as_its_message_says(good_steps: int, data: Path, tmp_path: Path) -> None:
    from transferkit.cli.train import resume_paths
    from transferkit.errors import TrainingError
    from transferkit.plugins import LOSS_TERMS
    from transferkit.runs.folders import check_writable
    from transferkit.train.losses import LossTerm

    class Poison(LossTerm):  # NaN after ``good_steps`` steps (3 steps: the first epoch)
        name, calls = "poison", 0

        def forward(self, batch, outputs):
            Poison.calls += 1
            return outputs.logits.sum() * (torch.tensor(float("nan")) if Poison.calls > good_steps else 0.0)

    LOSS_TERMS.register("poison", Poison, replace=True)
    run = tmp_path / "run"
    try:
        with pytest.raises(TrainingError) as caught:
            ImageClassifier(strategy="finetune", epochs=3, methods=["poison"], **SMALL).fit(data, out=run)
    finally:
        LOSS_TERMS.unregister("poison")
    message = str(caught.value)
    assert "resume=True would repeat" in message or "nothing was kept" in message, message
    if good_steps:  # a good checkpoint is kept, and overwrite replaces the folder, as the message says
        assert "overwrite=True to replace it" in message and (run / "checkpoints" / "last.safetensors").is_file()
        check_writable(run, overwrite=True)
    else:  # nothing was kept: a re-run takes the folder as it is, and --resume finds nothing to resume
        assert not (run / "checkpoints").exists()
        check_writable(run, overwrite=False)
        with pytest.raises(TransferkitError, match="no checkpoint to resume from"):
            resume_paths(run, None)
