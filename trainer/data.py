"""Torch datasets of fixed-length windows over a `trainer.corpus.Corpus`, and the training sample order.

A window is one stride of one segment (a document, or a pre-tokenized file). On text, every window starts with
BOS, so position 0 always holds the same token and a first-token attention sink can form (paper Fig. 2,
Table 4), and consecutive windows step seq_len content tokens through the document, so the whole corpus is
covered, not only the opening bytes of each file. Windows never span two documents: the short last window of a
document is padded (targets = IGNORE_INDEX) rather than packed with the next one. On the stdlib that wastes
under 1% of the positions (files average ~17 KB vs. seq_len <= a few K) and keeps every position's context
within one document, which the attention-sink and long-context probes rely on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gatelab.trainer.corpus import (
    DataConfig,
    DataError,
    Segments,
    require_windows,
    split_train_val,
    tokenize_source,
    window_counts,
)

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


class TokenWindows(Dataset):
    """Map-style dataset: window i -> (input_ids_T, target_ids_T), both int64 of length seq_len.

    With a BOS id (text), window k of a segment is BOS + content[k*T : k*T + T-1] with targets
    content[k*T : k*T + T]: every content token is a target exactly once. Without one (pre-tokenized data),
    inputs are tokens[k*T : k*T + T] and targets the same shifted by one. The order is fixed by the
    segment order alone, so it does not depend on the number of DataLoader workers.
    """

    def __init__(
        self, segments: Segments, seq_len: int, *, bos_id: int | None, pad_id: int, full_only: bool = False
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len={seq_len}: expected at least 2")
        self.segments = segments
        self.seq_len = seq_len
        self.bos_id = bos_id
        self.pad_id = pad_id
        count_S = window_counts(segments, seq_len, bos=bos_id is not None, full_only=full_only)
        self.first_window_S1 = np.concatenate([[0], np.cumsum(count_S)]).astype(np.int64)
        """Index of each segment's first window; the last entry is the number of windows."""
        self._arrays: list[np.ndarray] | None = None  # memory maps, opened lazily in each worker process

    def __len__(self) -> int:
        return int(self.first_window_S1[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(segment index, offset of the window's first content token within that segment)."""
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        s = int(np.searchsorted(self.first_window_S1, i, side="right")) - 1
        return s, (i - int(self.first_window_S1[s])) * self.seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, offset = self.locate(int(i))
        if self._arrays is None:
            self._arrays = [f.open() for f in self.segments.files]
        seg = self.segments
        start = int(seg.start_S[s]) + offset
        prefix = [] if self.bos_id is None else [self.bos_id]
        stop = min(start + self.seq_len + 1 - len(prefix), int(seg.end_S[s]))
        content = self._arrays[int(seg.file_S[s])][start:stop]
        seq_T1 = np.full(self.seq_len + 1, self.pad_id, dtype=np.int64)
        seq_T1[: len(prefix)] = prefix
        seq_T1[len(prefix) : len(prefix) + len(content)] = content
        n_real = len(prefix) + len(content)
        target_T = seq_T1[1:].copy()
        target_T[n_real - 1 :] = IGNORE_INDEX  # padding (the short last window of a segment)
        return torch.from_numpy(seq_T1[:-1].copy()), torch.from_numpy(target_T)

    def __getstate__(self) -> dict:
        # Pickling a memmap copies its data (np.memmap pickles as an ndarray); workers reopen the file instead.
        return {**self.__dict__, "_arrays": None}


@dataclass(frozen=True, kw_only=True, eq=False)
class Corpus:
    """A fingerprinted corpus split into train and validation token ranges."""

    fingerprint: str
    """The data's part of the trial identity (`trainer.corpus.data_fingerprint`)."""
    train: Segments
    """Training ranges."""
    val: Segments
    """Validation ranges: other files than train, or the tail of the tokens."""
    bos_id: int | None
    """Token prefixed to every window; None for pre-tokenized files."""
    eos_id: int | None
    """Token ending every document; None for pre-tokenized files."""


@dataclass(frozen=True, kw_only=True, eq=False)
class CorpusSplits:
    """Train and validation windows of one corpus at the training length, plus the facts a trial logs."""

    train: TokenWindows
    """Training windows at seq_len."""
    val: TokenWindows
    """Validation windows at seq_len."""
    fingerprint: str
    """The data's part of the trial identity (`trainer.corpus.data_fingerprint`)."""
    vocab_size: int
    """The model's vocabulary size every token id was checked against."""
    train_tokens: int
    """Tokens in the training split (BOS not counted); independent of seq_len."""
    val_tokens: int
    """Tokens in the validation split."""
    corpus: Corpus
    """The split corpus, for windows at other lengths."""

    def val_at(self, seq_len: int, *, full_only: bool = False) -> TokenWindows:
        """Validation windows at another length (long-context eval at 2x/4x/8x the training length), BOS-
        prefixed like training. full_only keeps only windows filled to seq_len, so a long-context score is not
        diluted by documents shorter than the window."""
        ds = _windows(self.corpus, self.corpus.val, seq_len, full_only)
        if not len(ds):
            raise DataError(
                f"validation split of data {self.fingerprint}: no "
                f"{'full ' if full_only else ''}window of {seq_len} tokens"
            )
        return ds


def load_corpus(cfg: DataConfig, cache_dir: Path, vocab_size: int | None = None) -> Corpus:
    """Tokenize (or load the cache), check ids < vocab_size when given, and split train/validation."""
    tok = tokenize_source(cfg, Path(cache_dir), vocab_size)
    train, val = split_train_val(tok, cfg.val_percent)
    return Corpus(fingerprint=tok.fingerprint, train=train, val=val, bos_id=tok.bos_id, eos_id=tok.eos_id)


def token_counts(cfg: DataConfig, cache_dir: Path) -> tuple[int, int]:
    """(training tokens, validation tokens) the corpus yields, independent of seq_len (BOS not counted)."""
    corpus = load_corpus(cfg, cache_dir)
    return corpus.train.n_tokens, corpus.val.n_tokens


def build_datasets(
    cfg: DataConfig, seq_len: int, cache_dir: Path, vocab_size: int, *, reuse: bool = False
) -> CorpusSplits:
    """Load (or build and cache) the corpus and cut both splits into seq_len windows; raises DataError for a
    missing, empty or out-of-vocabulary dataset, before any training starts. `reuse`: return this process's
    earlier result for the same arguments instead of listing and loading again (~0.1 s on the stdlib
    corpus) — for a grid worker, whose trials' keys already pin the data's fingerprint as the driver saw it."""
    if reuse:
        return _build_datasets_reused(cfg, seq_len, str(cache_dir), vocab_size)
    corpus = load_corpus(cfg, Path(cache_dir), vocab_size)
    require_windows(cfg, corpus.train, corpus.val, seq_len, bos=corpus.bos_id is not None)
    train = _windows(corpus, corpus.train, seq_len, False)
    val = _windows(corpus, corpus.val, seq_len, False)
    return CorpusSplits(
        train=train,
        val=val,
        fingerprint=corpus.fingerprint,
        vocab_size=vocab_size,
        train_tokens=corpus.train.n_tokens,
        val_tokens=corpus.val.n_tokens,
        corpus=corpus,
    )


@functools.lru_cache(maxsize=4)
def _build_datasets_reused(cfg: DataConfig, seq_len: int, cache_dir: str, vocab_size: int) -> CorpusSplits:
    return build_datasets(cfg, seq_len, Path(cache_dir), vocab_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n training windows in one epoch: a pure function of (seed, epoch), so a resumed run
    continues exactly where it stopped."""
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n)


def sample_index(i: int, n: int, seed: int) -> int:
    """Window index of global training sample i (0-based, counted over all epochs). Recomputes the epoch's
    permutation: a loop over many samples should call `epoch_permutation` once per epoch instead."""
    return int(epoch_permutation(n, seed, i // n)[i % n])


def _windows(corpus: Corpus, segments: Segments, seq_len: int, full_only: bool) -> TokenWindows:
    pad = corpus.eos_id if corpus.eos_id is not None else 0  # pads follow the real tokens: causal attention hides them
    return TokenWindows(segments, seq_len, bos_id=corpus.bos_id, pad_id=pad, full_only=full_only)
