"""Bad-input cases of issue 23 (area: adaptbounds), gathered into tests/test_bad_inputs.py's corpus.

Section 0: adaptation to a flat (unlabelled) target ends in a saved run, every candidate kept. Section 3:
every size and number a user or a file gives is bounded where it is parsed, before any work (no run folder
is created), in one line naming the option, the value and the allowed range. Section 5: non-finite settings
are refused before training."""

from __future__ import annotations

import json

from corpus_cases import FAST_FINETUNE, Case, Workspace

ADAPT = ("--epochs", "1", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--precision", "no",
         "--bottleneck", "16")
FINETUNE = ("train", "data", *FAST_FINETUNE, "--strategy", "finetune", "--out", "run")
NO_RUN = ("run",)  # refused before any work: the run folder is never created


def data(ws: Workspace) -> None:
    ws.images("data")


def data_and_flat_target(ws: Workspace) -> None:
    """data/<class>/ images and target/: six images, no class folders (unlabelled)."""
    ws.images("data")
    for i in range(6):
        ws.image(f"target/x{i}.png", (200, 60, 60) if i % 2 else (60, 60, 200))


def image_run(ws: Workspace) -> None:
    ws.copy("image_run", "run")
    ws.images("data")


def config_file(text: str):
    def setup(ws: Workspace) -> None:
        ws.images("data")
        ws.write("config.yaml", f"data: data\nbackbone: efficientnet_lite0\nstrategy: finetune\n{text}\n")
    return setup


def adapted_with_candidates(ws: Workspace, proc) -> None:
    metrics = json.loads(ws.path("run/metrics.json").read_text())
    assert "target" not in metrics, "an unlabelled target has no accuracy to report"
    kept = sorted(p.name for p in ws.path("run/candidates").iterdir())
    assert kept == ["1-source-only-seed-0", "2-coral-seed-0"], f"candidates kept: {kept}"


def adapted(ws: Workspace, proc) -> None:
    assert ws.path("run/model.safetensors").is_file(), "no run folder was written"


def bounded(name: str, kind: str, argv: tuple[str, ...], says: tuple[str, ...], setup=data) -> Case:
    """A value outside its declared range: exit 2, one line naming it and the range, no run folder."""
    return Case(name, kind, setup, argv, 2, says=says, absent=NO_RUN)


CASES: list[Case] = [
    # -- section 0: adaptation's basic case -----------------------------------------------------------------
    Case("adapt-unlabelled-target", "lost", data_and_flat_target,
         ("adapt", "data", "--target", "target", "--candidate", "dann", *ADAPT, "--out", "run"), 0, warns=False,
         check=adapted, timeout=400, note="a flat target and no --target-test: the run is saved"),
    Case("adapt-unlabelled-target-several-candidates", "lost", data_and_flat_target,
         ("adapt", "data", "--target", "target", "--candidate", "source-only", "--candidate", "coral", *ADAPT, "--out",
          "run"), 0, warns=False, check=adapted_with_candidates, timeout=600,
         note="the chosen run at run/, every trained candidate in run/candidates/"),
    Case("train-unlabelled-target-summary", "traceback", data_and_flat_target,
         ("train", "data", "--target", "target", "--image-size", "32", "--engine", "onnx", "--out", "run"), 0,
         warns=False, check=adapted, timeout=400, note="the summary printed no target accuracy for a flat target"),
    # -- section 3: plug-in spec options (adapters, methods, domain terms, callbacks, strategies) ------------
    bounded("lora-rank-huge", "security", (*FINETUNE, "--adapter", "lora:r=100000"),
            (r"lora", r"r=100000", r"\[1, 1024\]")),
    bounded("lora-rank-not-a-number", "traceback", (*FINETUNE, "--adapter", "lora:r=abc"), (r"r=abc", r"integer")),
    bounded("lora-dropout-above-one", "traceback", (*FINETUNE, "--adapter", "lora:dropout=2"),
            (r"dropout=2", r"\[0, 1\)")),
    bounded("lora-unknown-option", "usability", (*FINETUNE, "--adapter", "lora:rank=8"),
            (r"no option 'rank'", r"r, alpha, dropout, targets")),
    bounded("bitfit-takes-no-options", "usability", (*FINETUNE, "--adapter", "bitfit:r=8"), (r"takes no options",)),
    bounded("dann-hidden-huge", "security", (*FINETUNE, "--target", "target", "--method", "dann:hidden=1000000000"),
            (r"dann", r"hidden=1000000000", r"\[1, 8192\]"), data_and_flat_target),
    bounded("cdan-random-dim-huge", "security",
            (*FINETUNE, "--target", "target", "--method", "cdan:random_dim=100000000"),
            (r"random_dim=100000000", r"\[1, 16384\]"), data_and_flat_target),
    bounded("cdan-entropy-not-a-flag", "usability", (*FINETUNE, "--target", "target", "--method", "cdan:entropy=2"),
            (r"entropy=2", r"true or false"), data_and_flat_target),
    bounded("pseudo-label-threshold-above-one", "silent",
            (*FINETUNE, "--target", "target", "--method", "pseudo-label:threshold=1.5"),
            (r"threshold=1.5", r"\[0, 1\]"), data_and_flat_target),
    bounded("pseudo-label-warmup-negative", "silent",
            (*FINETUNE, "--target", "target", "--method", "pseudo-label:warmup=-1"),
            (r"warmup=-1", r"\[0, 10000\]"), data_and_flat_target),
    bounded("coral-weight-inf", "usability", (*FINETUNE, "--target", "target", "--method", "coral:weight=inf"),
            (r"weight=inf", r"\[0, 1000\]"), data_and_flat_target),
    bounded("l2sp-alpha-negative", "silent", (*FINETUNE, "--method", "l2sp:alpha=-1"), (r"alpha=-1", r"\[0, 1000\]")),
    bounded("lwf-temperature-zero", "traceback", (*FINETUNE, "--method", "lwf:temperature=0"),
            (r"temperature=0", r"\(0, 100\]")),
    bounded("distill-without-teacher", "usability", (*FINETUNE, "--method", "distill:alpha=0.5"),
            (r"distill", r"teacher= is required")),
    bounded("distill-alpha-nan", "usability", (*FINETUNE, "--method", "distill:teacher=x,alpha=nan"),
            (r"alpha=nan", r"\[0, 1\]")),
    bounded("last-k-huge", "usability", ("train", "data", *FAST_FINETUNE, "--strategy", "last-k:99999999999999",
                                         "--out", "run"), (r"last-k", r"\[1, 1000\]")),
    # -- section 3: numeric options of train / adapt / tune / rank / evaluate / demo and config files --------
    bounded("adapt-bottleneck-huge", "security",
            ("adapt", "data", "--target", "target", "--candidate", "dann", "--bottleneck", "100000000", "--out", "run"),
            (r"--bottleneck", r"100000000", r"\[0, 16384\]"), data_and_flat_target),
    bounded("epochs-huge", "usability", (*FINETUNE, "--epochs", "1000000000"), (r"epochs", r"\[1, 100000\]")),
    bounded("lr-inf", "usability", (*FINETUNE, "--lr", "inf"), (r"'lr' = inf", r"\(0, 10\]")),
    bounded("lr-nan", "usability", (*FINETUNE, "--lr", "nan"), (r"'lr' = nan", r"\(0, 10\]")),
    bounded("image-size-huge", "security", ("train", "data", "--image-size", "100000", "--out", "run"),
            (r"image_size", r"\[16, 1024\]")),
    bounded("batch-size-huge", "security", (*FINETUNE, "--batch-size", "1000000000"), (r"batch_size", r"\[1, 8192\]")),
    bounded("workers-huge", "security", (*FINETUNE, "--workers", "100000"), (r"workers", r"\[0, 256\]")),
    bounded("seed-negative", "usability", ("train", "data", "--seed", "-1", "--out", "run"),
            (r"seed", r"\[0, 4294967295\]")),
    bounded("weight-decay-inf", "usability", (*FINETUNE, "--weight-decay", "inf"), (r"weight_decay", r"\[0, 100\]")),
    bounded("grad-accum-huge", "usability", (*FINETUNE, "--grad-accum", "100000000"), (r"grad_accum", r"\[1, 1024\]")),
    bounded("rank-folds-huge", "usability", ("rank", "data", "--folds", "1000000"), (r"--folds", r"\[2, 100\]")),
    Case("evaluate-show-errors-negative", "silent", image_run, ("evaluate", "run", "data", "--show-errors", "-5"), 2,
         says=(r"--show-errors", r"-5", r"\[0, 1e\+06\]|\[0, 1000000\]")),
    bounded("tune-trials-zero", "usability",
            ("tune", "data", "--storage", "sqlite:///study.db", "--out", "run", "--trials", "0"),
            (r"--trials", r"\[1, 100000\]")),
    bounded("demo-seed-huge", "usability", ("demo", "--seed", "99999999999", "--workdir", "run"),
            (r"--seed", r"\[0, 4294967295\]")),
    bounded("config-file-lr-nan", "silent", ("train", "--config", "config.yaml", "--out", "run"),
            (r"'lr' = nan", r"\(0, 10\]"), config_file("lr: .nan")),
    bounded("config-file-lora-rank-huge", "security", ("train", "--config", "config.yaml", "--out", "run"),
            (r"r=100000", r"\[1, 1024\]"), config_file("adapter: lora:r=100000")),
    # -- section 5: non-finite settings are diagnosed before training -----------------------------------------
    bounded("lora-alpha-nan", "usability", (*FINETUNE, "--adapter", "lora:alpha=nan"),
            (r"lora", r"alpha=nan", r"\(0, 10000\]")),
    bounded("dann-gamma-inf", "usability", (*FINETUNE, "--target", "target", "--method", "dann:gamma=inf"),
            (r"gamma=inf", r"\[0, 100\]"), data_and_flat_target),
]
CASES += [
    bounded("rank-image-sizes-huge", "security", ("rank", "data", "--image-sizes", "32,100000"),
            (r"--image-sizes", r"<= 1024")),
    bounded("rank-image-sizes-thousands-of-digits", "traceback", ("rank", "data", "--image-sizes", "9" * 5000),
            (r"--image-sizes", r"<= 1024")),
]
