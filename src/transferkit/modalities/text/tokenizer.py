"""Token ids from a model folder's tokenizer files, without importing transformers where possible."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


BYTES_PER_CHAR = 80  # the tokenizer's encodings of a text (ids, offsets, tokens, overflow): 74 measured


def text_cost(texts: list[str]) -> int:
    """The bytes tokenizing ``texts`` takes at its peak (a server admits them into its budget first)."""
    return sum(len(text) for text in texts) * BYTES_PER_CHAR


class TextTokenizer:
    """Token ids with the model's special tokens, truncated to ``max_length``, unpadded.

    A folder with ``tokenizer.json`` is read by the ``tokenizers`` library alone: transformers (which imports
    torch) costs 4 s of start-up here, and an embedding served from the cache needs neither. Anything else (a
    hub id, a folder with only a slow tokenizer) goes through ``AutoTokenizer``; both give the same ids (tested).

    Thread safe (``transferkit serve`` tokenizes concurrent requests on several threads): a ``tokenizers``
    object is a Rust value behind a RefCell, and changing its truncation while another thread encodes with it
    fails with "Already borrowed". So each ``max_length`` gets its own copy, configured once and then only
    read (concurrent encodes keep running in parallel); ``AutoTokenizer``, which sets truncation on every call,
    is used under a lock.
    """

    def __init__(self, location: str) -> None:
        self.location = location
        folder = Path(location)
        self.fast = None
        self.auto = None
        self.lock = threading.Lock()
        self.truncated: dict[int, Tokenizer] = {}  # max_length -> a copy of ``fast`` truncating there, never changed
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.fast.no_padding()  # sentence-transformers folders ask for fixed padding to max_length
            self.pad_token_id = self._pad_id(folder)
        else:
            from transformers import AutoTokenizer

            self.auto = AutoTokenizer.from_pretrained(location)
            self.pad_token_id = self.auto.pad_token_id if self.auto.pad_token_id is not None else 0

    def _pad_id(self, folder: Path) -> int:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            try:
                token = json.loads((folder / name).read_text()).get("pad_token")
            except (OSError, ValueError, AttributeError):
                continue
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str) and self.fast.token_to_id(token) is not None:
                return int(self.fast.token_to_id(token))
        return 0

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if self.auto is not None:
            with self.lock:
                return self.auto(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]
        return [e.ids for e in self.truncating(max_length).encode_batch(list(texts))]

    def truncating(self, max_length: int) -> Tokenizer:
        """The fast tokenizer truncating at ``max_length``: made on first use, then never changed."""
        with self.lock:
            if max_length not in self.truncated:
                from tokenizers import Tokenizer

                copy = Tokenizer.from_str(self.fast.to_str())
                copy.enable_truncation(max_length=max_length)
                self.truncated[max_length] = copy
            return self.truncated[max_length]

    def save(self, folder: Path) -> None:
        """The tokenizer's files, as a model folder holds them (``AutoTokenizer`` loads them too)."""
        if self.auto is not None:
            self.auto.save_pretrained(str(folder))
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (Path(self.location) / name).is_file():
                shutil.copyfile(Path(self.location) / name, folder / name)


_LOADED: dict[tuple[str, int], TextTokenizer] = {}
_LOADING = threading.Lock()


def load_text_tokenizer(location: str) -> TextTokenizer:
    """One tokenizer per folder (and version of its ``tokenizer.json``) per process: a fit needs it for the
    training, validation and test texts, the predictor and the saved run, and each load parses the files."""
    file = Path(location) / "tokenizer.json"
    key = (location, file.stat().st_mtime_ns if file.is_file() else 0)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = TextTokenizer(location)
        return _LOADED[key]
