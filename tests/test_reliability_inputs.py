"""Issue #11, data and inputs: unit tests for each bad input the modalities must refuse, skip with a warning
or read correctly (image size limits, float TIFFs, non-UTF-8 names, what folder scans pass over, CSV rows,
text predict inputs, offline hub backbones, the backbone listing, and the plain training transform)."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import COLOURS, FAST, make_folder, make_image
from transferkit.config import RunConfig
from transferkit.errors import BackboneError, DataError
from transferkit.modalities import IMAGE, TEXT, all_backbones
from transferkit.modalities.image.features import cache_keys
from transferkit.modalities.image.folders import list_image_inputs, load_image_folder
from transferkit.modalities.image.images import ImageRefused, check_image_size, load_rgb
from transferkit.modalities.image.pipeline import decode_batches
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.modalities.text.table import merge_spellings, read_text_table


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# -- 1. image memory limits --------------------------------------------------------------------------------------
def test_thin_image_is_refused_from_its_header_before_any_pixel_is_decoded(tmp_path: Path, monkeypatch) -> None:
    Image.new("RGB", (50000, 1), (200, 10, 10)).save(tmp_path / "thin.png")  # a few hundred bytes on disk
    assert (tmp_path / "thin.png").stat().st_size < 2000

    def no_decoding(self):
        raise AssertionError("decoded an image that its header already refuses")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageRefused, match=r"50000x1 pixels: aspect ratio 50000:1 is over 20:1") as info:
        load_rgb(tmp_path / "thin.png", draft_size=256)
    one_line(info.value)


def test_size_limits_decoded_resized_and_aspect() -> None:
    check_image_size(12000, 1500, 256)  # an 8:1 phone panorama passes
    check_image_size(24000, 2000, 256)  # a 12:1 360-degree strip passes
    with pytest.raises(ImageRefused, match="aspect ratio 200000:1"):
        check_image_size(200000, 1, 256)
    with pytest.raises(ImageRefused, match="over the limit of 89 MP"):
        check_image_size(10000, 10000)
    with pytest.raises(ImageRefused, match="smaller --image-size"):  # 15:1 is fine at 256, not at 1200
        check_image_size(3000, 200, 1200)
    check_image_size(3000, 200, 256)


def test_refused_image_is_an_unreadable_file_with_its_reason(tmp_path: Path) -> None:
    Image.new("RGB", (200000, 1)).save(tmp_path / "strip.png")
    make_image(tmp_path / "ok.png", (10, 200, 10))
    start = time.perf_counter()
    (batch,) = decode_batches([str(tmp_path / "strip.png"), str(tmp_path / "ok.png")], Preprocessing(64))
    assert time.perf_counter() - start < 5
    assert batch.indices == [1] and len(batch.images) == 1
    ((position, reason),) = batch.failed
    assert position == 0 and reason.startswith("refused: 200000x1 pixels") and "crop the image" in reason
    assert cache_keys([str(tmp_path / "ok.png"), str(tmp_path / "gone.png")])[1] is None  # gone since listed


def test_fit_skips_a_refused_image_with_a_warning_and_strict_stops(tmp_path: Path, capsys) -> None:
    from transferkit import ImageClassifier

    root = make_folder(tmp_path / "d", {"train": 4, "val": 2})
    Image.new("RGB", (50000, 1)).save(root / "train" / "red" / "thin.png")
    clf = ImageClassifier(**FAST).fit(root)
    (skipped,) = clf.metrics_["skipped_files"]
    assert skipped["path"].endswith("thin.png") and "aspect ratio" in skipped["reason"]
    assert "thin.png" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"unreadable file\(s\) in train: .*thin.png \(refused: 50000x1"):
        ImageClassifier(strict=True, **FAST).fit(root)


# -- 2. float and 16-bit TIFF ------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [np.linspace(0, 1, 600, dtype=np.float32),  # the usual float range
                                    np.linspace(-3, 5, 600, dtype=np.float32)])  # negative values too
def test_float_tiff_is_scaled_by_its_own_range(tmp_path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.reshape(20, 30)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    grey = np.asarray(load_rgb(tmp_path / "f.tif"))[..., 0].astype(int)
    assert grey.min() == 0 and grey.max() == 255 and 100 < grey.mean() < 155  # not black, not white


def test_float_tiff_with_nan_and_big_endian_16_bit(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 600, dtype=np.float32)
    values[:10] = np.nan
    Image.fromarray(values.reshape(20, 30)).save(tmp_path / "nan.tif")
    assert np.asarray(load_rgb(tmp_path / "nan.tif")).max() == 255
    big = np.linspace(0, 4000, 600).astype(">u2").reshape(20, 30)
    Image.frombuffer("I;16B", (30, 20), big.tobytes(), "raw", "I;16B", 0, 1).save(tmp_path / "b.tif")
    assert np.asarray(load_rgb(tmp_path / "b.tif")).max() == 255


# -- 3. file and folder names that are not UTF-8 -----------------------------------------------------------------
def undecodable_folder(root: Path) -> Path:
    """root/<class>/img_<0xff>N.png and a class folder whose own name is not UTF-8."""
    for name, colour in COLOURS.items():
        folder = os.fsencode(root) + b"/" + name.encode() + (b"\xfe" if name == "blue" else b"")
        os.makedirs(folder, exist_ok=True)
        for i in range(5):
            make_image(Path(os.fsdecode(folder + b"/img_\xff%d.png" % i)), colour, seed=i)
    return root


@pytest.mark.parametrize("cache", [True, False])
def test_non_utf8_names_train_and_predict(tmp_path: Path, cache: bool) -> None:
    from transferkit import ImageClassifier

    root = undecodable_folder(tmp_path / "d")
    clf = ImageClassifier(cache=cache, **FAST).fit(root)
    assert clf.metrics_["skipped_files"] == [] and len(clf.classes_) == 2
    assert "\udcfe" in clf.classes_[0]  # the class keeps its name as Python gives it
    records = clf.predict_records(str(root / "red"))
    assert len(records) == 5 and all("predictions" in r for r in records)
    assert json.loads(json.dumps(records))[0]["input"] == records[0]["input"]  # JSON round-trips the name
    run = clf.save(tmp_path / "run")
    assert json.loads((run / "metrics.json").read_text())["data"]


# -- 4. what folder scans pass over ------------------------------------------------------------------------------
def test_links_loose_images_and_tool_folders_are_named_not_trained(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "d", {"": 4})
    red = root / "red"
    (red / "gone.png").symlink_to(tmp_path / "nowhere.png")  # dangling
    (red / "self.png").symlink_to(red / "self.png")  # a link loop on a file
    (red / "up").symlink_to(root)  # a link loop on a folder
    make_image(red / ".ipynb_checkpoints" / "img_0-checkpoint.png", COLOURS["blue"])
    make_image(red / "__MACOSX" / "x.png", COLOURS["blue"])
    make_image(red / "nested" / "deep.png", COLOURS["red"])
    make_image(root / "loose.png", COLOURS["red"])
    (root / "everything").symlink_to(root)  # a "class" that would hold every class
    (red / "placeholder.gif").write_bytes(b"GIF89a")

    start = time.perf_counter()
    data = load_image_folder(root, 0.0)
    assert time.perf_counter() - start < 5
    trained = [Path(p).relative_to(root).as_posix() for p in data.train.items]
    assert "red/nested/deep.png" in trained and len(trained) == 9 and data.classes == ["blue", "red"]
    assert not any("checkpoint" in p or "MACOSX" in p or "loose" in p or p.startswith("red/up") for p in trained)
    reasons = {Path(s["path"]).name: s["reason"] for s in data.skipped}
    assert "dangling symbolic link" in reasons["gone.png"] and reasons["self.png"] == "symbolic link loop"
    assert "link loop" in reasons["up"] and "link loop" in reasons["everything"]
    assert "beside the class folders" in reasons["loose.png"]
    assert "hidden or tool folder" in reasons[".ipynb_checkpoints"] and "__MACOSX" in reasons
    assert any(p.endswith("placeholder.gif") for p in data.ignored)  # placeholders: as before
    err = capsys.readouterr().err
    assert err.count("hidden or tool folder(s)") == 1 and ".ipynb_checkpoints" in err
    assert "gone.png (dangling" in err and "loose.png" in err and "not used" in err


def test_predict_folder_with_a_link_loop_ends_and_skips_hidden_folders(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "p"
    make_image(folder / "a.png", COLOURS["red"])
    make_image(folder / ".ipynb_checkpoints" / "a-checkpoint.png", COLOURS["red"])
    (folder / "loop").symlink_to(folder)
    (folder / "dead.png").symlink_to(tmp_path / "missing.png")
    assert [Path(p).name for p in list_image_inputs([folder])] == ["a.png"]
    assert "dead.png" in capsys.readouterr().err
    with pytest.raises(DataError, match="dead.png: dangling symbolic link") as info:
        list_image_inputs([folder / "dead.png"])
    one_line(info.value)


def test_folder_beside_the_splits_and_single_image_class_are_said(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "d", {"train": 3, "val": 2})
    make_image(root / "green" / "img_0.png", (40, 200, 40))  # beside train/: in no split
    make_image(root / "train" / "green" / "img_0.png", (40, 200, 40))  # one training image
    data = IMAGE.read_training(root, None, None, RunConfig())
    assert len(data.train) == 7 and not any("/d/green/" in p for p in data.train.items + data.val.items)
    assert any(s["path"].endswith("/d/green") and "no split" in s["reason"] for s in data.skipped)
    err = capsys.readouterr().err
    assert "folder(s) beside train/ are not used" in err and "single example in train" in err and "'green'" in err


def test_class_folder_holding_only_a_tool_folder_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"": 3})
    make_image(root / "green" / ".ipynb_checkpoints" / "g.png", (0, 200, 0))
    with pytest.raises(DataError, match=r"green: class folder 'green' has no image files"):
        load_image_folder(root)


# -- 5. text tables ----------------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_with_more_or_fewer_fields_are_skipped_by_line_or_strict(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,label\ngood film,pos\ngreat, really great,pos\nbad\nfine,neg,,\n")
    table = read_text_table(path)
    assert table.texts == ["good film", "fine"] and table.labels == ["pos", "neg"]  # trailing empty fields: fine
    assert [s["line"] for s in table.skipped] == [3, 4]
    assert "3 fields but the header has 2" in table.skipped[0]["reason"]
    assert "1 field but the header has 2" in table.skipped[1]["reason"]
    with pytest.raises(DataError, match=r"d.csv:3: 3 fields but the header has 2 .*quote the text") as info:
        read_text_table(path, strict=True)
    one_line(info.value)


def test_duplicate_label_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.csv", "text,label,label\ngood,pos,\nbad,neg,\n")
    with pytest.raises(DataError, match=r"dup.csv:1: column 'label' appears more than once") as info:
        read_text_table(path)
    one_line(info.value)


def test_unclosed_quote_is_reported_where_it_opened(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'text,label\nfirst,pos\n"broken,neg\nswallowed,pos\n"quoted",neg\nafter,pos\n'
                                     'more,neg\n')
    table = read_text_table(path)
    assert table.texts == ["first", "after", "more"] and table.lines == [2, 6, 7]
    (skipped,) = table.skipped
    assert skipped["line"] == 3 and "a quote opened on line 3 is not closed until line 5" in skipped["reason"]
    never_closed = write(tmp_path / "open.csv", 'text,label\nfine,pos\n"open,neg\nrow,pos\nrow,neg\n')
    assert "quote opened on line 3" in read_text_table(never_closed).skipped[0]["reason"]
    with pytest.raises(DataError, match=r"open.csv:3: a quote opened on line 3"):
        read_text_table(never_closed, strict=True)
    with pytest.raises(DataError, match=r"only one label \('pos'\) found.*line 3 \(a quote opened on line 3"):
        TEXT.read_training(never_closed, None, None, RunConfig())  # what is left has one label: say why


def test_a_quoted_text_over_several_lines_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", 'text,label\n"first line\nsecond line, with a comma",pos\nok,neg\n')
    table = read_text_table(path)
    assert table.texts == ["first line\nsecond line, with a comma", "ok"] and not table.skipped


def test_labels_differing_in_case_or_spaces_are_merged_and_said(tmp_path: Path, capsys) -> None:
    assert merge_spellings(["pos", "Pos", " pos ", "pos", "neg"]) == (
        ["pos"] * 4 + ["neg"], ["' pos ' (1), 'Pos' (1) into 'pos' (2)"])
    rows = "".join(f"text {i},{label}\n" for i, label in enumerate(["pos", "pos", "Pos", " pos", "neg", "neg", "NEG"]))
    path = write(tmp_path / "l.csv", "text,label\n" + rows)
    data = TEXT.read_training(path, None, None, RunConfig(val_fraction=0.0))
    assert data.classes == ["neg", "pos"] and len(data.train) == 7
    assert "merged labels of" in capsys.readouterr().err


def test_single_example_class_is_warned_with_its_line(tmp_path: Path, capsys) -> None:
    rows = "".join(f"text {i},{'a' if i % 2 else 'b'}\n" for i in range(10)) + "lonely,c\n"
    path = write(tmp_path / "s.csv", "text,label\n" + rows)
    data = TEXT.read_training(path, None, None, RunConfig(val_fraction=0.2))
    assert "c" in data.classes and 2 not in data.val.labels
    err = capsys.readouterr().err
    assert "1 class(es) have a single example in" in err and "'c' (line 12)" in err


def test_evaluation_labels_match_classes_whatever_their_case(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "text,label\nx,POS\ny,neg\n")
    split, skipped = TEXT.read_labelled(path, None, ["neg", "pos"], RunConfig())
    assert split.labels == [1, 0] and skipped == []


# -- 6. text predict inputs --------------------------------------------------------------------------------------
def test_predict_inputs_that_look_like_paths_are_read_or_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = RunConfig()
    write(tmp_path / "notes.txt", "hello\n")
    write(tmp_path / "p.csv", "text,label\nfirst,\nsecond,pos\n")
    (tmp_path / "folder").mkdir()
    for given, says in [("missing.csv", "missing.csv: no such file; to classify this as text, pass --text"),
                        ("data/reviews", "data/reviews: no such file"), ("folder", "folder: is a folder"),
                        ("notes.txt", "notes.txt: '.txt' files are not read")]:
        with pytest.raises(DataError) as info:
            TEXT.predict_inputs([given], config)
        assert one_line(info.value).startswith(says), info.value
    records = TEXT.predict_inputs(["p.csv", "I like A/B tests", "a plain sentence"], config)
    assert [r["input"] for r in records] == ["first", "second", "I like A/B tests", "a plain sentence"]
    assert records[0]["line"] == 2  # an empty label is no reason to skip a row to predict
    literal = TEXT.predict_inputs(["missing.csv", "folder", "p.csv"], config, text=True)
    assert literal == [{"input": "missing.csv"}, {"input": "folder"}, {"input": "p.csv"}]
    with pytest.raises(DataError, match="is for text runs"):
        IMAGE.predict_inputs(["a.png"], config, text=True)


# -- 7. hub backbones offline ------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """The hub looks unreachable, and any real connection attempt fails the test."""
    import transferkit.modalities.hub as hub

    for name in hub.OFFLINE_VARIABLES + hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda host, port: False)
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: pytest.fail("opened a connection"))
    return hub


def test_offline_is_decided_from_the_environment_without_network(monkeypatch, no_network) -> None:
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(no_network, "reachable", lambda host, port: pytest.fail("probed despite the variable"))
    assert no_network.offline_reason() == "TRANSFORMERS_OFFLINE is set"
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert no_network.offline_reason() is None  # through a proxy only trying tells
    logger, before = logging.getLogger("huggingface_hub"), logging.getLogger("huggingface_hub").level
    with no_network.quiet_hub():  # no retry warnings while a download runs
        assert not logger.isEnabledFor(logging.WARNING)
    assert logger.level == before


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_hub_image_backbone_offline_fails_at_once_in_one_line(name: str, no_network, monkeypatch,
                                                              tmp_path: Path) -> None:
    import huggingface_hub.constants
    import torch

    from transferkit.modalities.image.backbones import resolve_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    start = time.perf_counter()
    with pytest.raises(BackboneError) as info:
        resolve_backbone(name)
    assert time.perf_counter() - start < 5
    assert "cannot be reached" in one_line(info.value) and "--weights" in str(info.value)


def test_hub_text_backbone_offline_fails_at_once_in_one_line(no_network, monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    from transferkit.modalities.text.backbone import resolve_text_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BackboneError) as info:
        resolve_text_backbone("someone/some-encoder")
    assert "cannot be reached" in one_line(info.value) and "local model folder" in str(info.value)


def test_cached_timm_weights_load_offline_without_the_hub(no_network, monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants
    import timm
    import torch
    from safetensors.torch import save_file

    from transferkit.modalities.image.backbones import resolve_backbone

    snapshot = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    reference = timm.create_model("test_resnet", num_classes=1000)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    net = resolve_backbone("test_resnet").build()
    assert torch.equal(net.conv1[0].weight, reference.conv1[0].weight)


def test_damaged_tokenizer_folder_is_named(tmp_path: Path) -> None:
    import dataclasses

    from transferkit.modalities.text.backbone import resolve_text_backbone

    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Word')
    spec = dataclasses.replace(resolve_text_backbone("all-MiniLM-L6-v2"), tokenizer_location=str(tmp_path))
    with pytest.raises(BackboneError, match=r"tokenizer.json: cannot read the tokenizer") as info:
        spec.load_tokenizer()
    one_line(info.value)


# -- 8. the backbone listing -------------------------------------------------------------------------------------
def test_backbones_lists_text_encoders_too() -> None:
    from typer.testing import CliRunner

    from transferkit.cli.app import app

    rows = {(row["modality"], row["name"]): row for row in all_backbones()}
    minilm = rows[("text", "all-MiniLM-L6-v2")]
    assert minilm["offline"] and minilm["num_features"] == 384
    assert ("text", "<model folder>") in rows and not rows[("text", "<hub id>")]["offline"]
    assert rows[("image", "efficientnet_lite0")]["offline"]
    result = CliRunner().invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0 and {"image", "text"} == {row["modality"] for row in json.loads(result.stdout)}
    table = CliRunner().invoke(app, ["backbones"], env={"COLUMNS": "160"})
    assert "all-MiniLM-L6-v2" in table.stdout and "<hub id>" in table.stdout


# -- 9. --augment none -------------------------------------------------------------------------------------------
def test_plain_training_transform_raises_no_warning() -> None:
    from transferkit.modalities.image.training import train_transform

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = train_transform(Preprocessing(64), "none")(Image.new("RGB", (80, 70), (10, 20, 30)))
    assert tuple(tensor.shape) == (3, 64, 64) and abs(float(tensor[2].mean()) - 30 / 255) < 1e-6


def test_affine_augmentation_warps_the_digit_and_paints_what_it_uncovers_like_the_border() -> None:
    import torch

    from transferkit.modalities.image.training import train_transform

    grey = Image.new("RGB", (40, 40), (200, 200, 200))
    warp = train_transform(Preprocessing(32, crop_pct=1.0), "affine")
    torch.manual_seed(0)
    assert torch.allclose(warp(grey), torch.full((3, 32, 32), 200 / 255), atol=1e-5)  # zoom-out adds no black frame
    digit = Image.new("RGB", (40, 40))
    digit.paste((255, 255, 255), (6, 8, 16, 32))  # a white bar on black, left of centre
    plain = train_transform(Preprocessing(32, crop_pct=1.0), "none")(digit)
    views = [warp(digit) for _ in range(20)]
    assert all(tuple(v.shape) == (3, 32, 32) and not torch.allclose(v, plain) for v in views)
    assert all(float(v[:, [0, 0, -1, -1], [0, -1, 0, -1]].max()) < 0.05 for v in views)  # black corners, not grey
    columns = torch.arange(32.0)
    centres = [float((v[0].sum(0) * columns).sum() / v[0].sum()) for v in views]
    assert max(centres) < 16  # never mirrored: the bar stays left of centre (a flip would put it at x ~ 22)
