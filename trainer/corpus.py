"""Training text as token ranges: the embedded stdlib corpus or user data, listed, fingerprinted, tokenized, cached.

Pure numpy + stdlib (no torch), so `grid/` can call `data_fingerprint` for a trial's identity
(grid/spec/identity.py), and `checked_fingerprint` to refuse bad data early, on a machine without torch.
`split_train_val` splits the `Tokenized` result; `trainer.data` cuts the splits into torch datasets of windows.

Layout on disk: text is tokenized once into a flat token array `<cache_dir>/<key>.tokens.npy` (each non-empty
file's tokens followed by EOS), its document offsets `<key>.docs.npy` and `<key>.meta.json` (written last, so
its presence marks a complete cache). Everything is memory-mapped; a dataset holds only offsets.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import IO

import numpy as np

from gatelab.trainer.config.invalid import NO_VALUE, InvalidValue

BOS_ID = 256  # byte-level: ids 0..255 are the bytes themselves
EOS_ID = 257
FORMAT_VERSION = 1  # bump when tokenization or cache layout changes; hashed into every fingerprint
TOKEN_SUFFIXES = (".bin", ".npy")
_SAMPLE_BYTES = 1 << 16  # head and tail of each user file hashed into the fingerprint
_FULL_CHECK_TOKENS = 1 << 26  # token files up to this size get a full max() check; bigger ones a sample
_CHECK_CHUNK = 1 << 20
_NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file (numpy.lib.format)
_TOKENIZER_BOS = ("<|begin_of_text|>", "<s>", "<bos>", "[BOS]", "<|endoftext|>")
_TOKENIZER_EOS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "[EOS]")


class DataError(InvalidValue):
    """A missing, empty or malformed dataset; the one-line message names the path and what was expected.
    Its key is the DataConfig field at fault: `source` unless said otherwise, since most errors are about the
    files that field names (so the message comes first here, unlike InvalidValue)."""

    def __init__(self, message: str, key: str = "source", *, value=NO_VALUE) -> None:
        super().__init__(key, message, value=value)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the training tokens come from and how they are split; seq_len comes from the model/trainer."""

    source: str = "stdlib"
    """'stdlib' (the running interpreter's *.py files), or a file, a directory or a glob pattern."""
    format: str = "auto"
    """'text' (bytes, or `tokenizer`), 'tokens' (pre-tokenized .bin/.npy), or 'auto' (decided by suffix)."""
    token_dtype: str = "uint16"
    """Element type of raw .bin token files (nanoGPT writes uint16); .npy files carry their own dtype."""
    tokenizer: str | None = None
    """Path to a HF `tokenizer.json` for text (needs `pip install tokenizers`); None means byte-level."""
    val_percent: float = 1.0
    """Percent of files held out for validation (of tokens, when too few files to split by file)."""

    def __post_init__(self) -> None:
        if not self.source:
            raise DataError("expected 'stdlib', a file, a directory or a glob pattern", value=self.source)
        if self.format not in ("auto", "text", "tokens"):
            raise DataError("expected 'auto', 'text' or 'tokens'", "format", value=self.format)
        if self.token_dtype not in ("uint16", "uint32"):
            raise DataError("expected 'uint16' or 'uint32'", "token_dtype", value=self.token_dtype)
        if not 0 < self.val_percent <= 50:
            raise DataError("expected a percentage in (0, 50]", "val_percent", value=self.val_percent)
        if self.tokenizer is not None and self.format == "tokens":
            raise DataError(
                "pre-tokenized files (data.format='tokens') need no tokenizer", "tokenizer", value=self.tokenizer
            )


@dataclass(frozen=True, kw_only=True)
class Listing:
    """The files a DataConfig resolves to, sorted so every machine sees the same order."""

    kind: str
    """'text' or 'tokens'."""
    root: Path
    """Directory the relative paths are relative to."""
    rel_paths: tuple[str, ...]
    """File paths relative to `root` (POSIX separators), sorted."""
    sizes: tuple[int, ...]
    """Size in bytes of each file."""
    pair: bool
    """True when the files are a nanoGPT train/val pair (rel_paths == (train.*, val.*)) used as given."""


@dataclass(frozen=True, kw_only=True)
class TokenFile:
    """One on-disk token array, opened as a read-only memory map in whichever process reads it."""

    path: str
    """Absolute path of the .npy or raw .bin file."""
    raw_dtype: str | None
    """Element type of a raw .bin file; None for .npy (its header says)."""

    def open(self) -> np.ndarray:
        if self.raw_dtype is None:
            return np.load(self.path, mmap_mode="r")
        return np.memmap(self.path, dtype=self.raw_dtype, mode="r")


@dataclass(frozen=True, kw_only=True, eq=False)
class Segments:
    """Token ranges of one split. Windows never cross a segment's end, so a window never mixes two files."""

    files: tuple[TokenFile, ...]
    """The arrays the ranges index into."""
    file_S: np.ndarray
    """Index into `files` of each segment (int64)."""
    start_S: np.ndarray
    """Offset of each segment's first token in its file (int64)."""
    end_S: np.ndarray
    """One past each segment's last token (int64)."""
    names: tuple[str, ...]
    """Source file (relative path) of each segment, for reports and tests."""

    @property
    def n_tokens(self) -> int:
        return int((self.end_S - self.start_S).sum())

    def subset(self, index: np.ndarray) -> Segments:
        """The segments selected by a boolean mask or index array, in their original order."""
        names = np.array(self.names, dtype=object)[index]
        return Segments(
            files=self.files,
            file_S=self.file_S[index],
            start_S=self.start_S[index],
            end_S=self.end_S[index],
            names=tuple(names),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Tokenized:
    """A source's tokens: one segment per document (text) or per file (pre-tokenized), in listing order."""

    fingerprint: str
    """16 hex chars of sha256 over the file list, sizes and everything else that changes the tokens or split."""
    segments: Segments
    """Every document or file; `trainer.data` splits them into train and validation."""
    pair: bool
    """A nanoGPT train/val pair: segment 0 is the training file, segment 1 the validation file."""
    bos_id: int | None
    """Token prefixed to every window; None for pre-tokenized files (their BOS, if any, is unknown)."""
    eos_id: int | None
    """Token ending every document; None for pre-tokenized files."""


def list_source(cfg: DataConfig) -> Listing:
    """Resolve `cfg.source` to files, or raise DataError naming the path and what was expected."""
    if cfg.source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        return _listing("text", root, _walk(root, suffix=".py", skip={"site-packages", "__pycache__"}), False, cfg)
    src = os.path.expanduser(cfg.source)
    if any(c in src for c in "*?["):
        root = _glob_root(src)
        paths = sorted(Path(p) for p in glob(src, recursive=True) if os.path.isfile(p))
        if not paths:
            raise DataError(f"data.source {cfg.source!r}: the glob matched no files (expected text or .bin/.npy files)")
    elif os.path.isdir(src):
        root = Path(src)
        paths = _walk(root)
        if not paths:
            raise DataError(f"data.source {cfg.source!r}: the directory holds no files (expected text or .bin/.npy)")
    elif os.path.isfile(src):
        root, paths = Path(src).parent, [Path(src)]
    else:
        raise DataError(
            f"data.source {cfg.source!r}: no such file or directory "
            "(expected 'stdlib', a text/.bin/.npy file, a directory or a glob pattern)"
        )
    rels = [p.relative_to(root).as_posix() for p in paths]
    is_tok = [r.endswith(TOKEN_SUFFIXES) for r in rels]
    pair = _train_val_pair(rels) if cfg.format != "text" else None
    if pair is not None:
        return _listing("tokens", root, [root / r for r in pair], True, cfg)
    if cfg.format == "tokens" or (cfg.format == "auto" and all(is_tok)):
        kept = [p for p, t in zip(paths, is_tok) if t]
        if not kept:
            raise DataError(f"data.source {cfg.source!r}: no .bin/.npy token files (data.format='tokens')")
        return _listing("tokens", root, kept, False, cfg)
    if cfg.format == "auto" and any(is_tok):
        raise DataError(
            f"data.source {cfg.source!r}: mixes .bin/.npy token files with other files; "
            "set data.format to 'text' or 'tokens', or narrow the source with a glob"
        )
    return _listing("text", root, paths, False, cfg)


def data_fingerprint(cfg: DataConfig) -> str:
    """The data's part of a trial's identity; cheap (lists and stats files, builds nothing). A user's text file
    that holds binary data near its start is a DataError here already."""
    return _keys(cfg, list_source(cfg))[1]


def checked_fingerprint(cfg: DataConfig, vocab_size: int) -> str:
    """`data_fingerprint` after every check that needs no tokenizing, so a command can refuse bad data before it
    creates anything: token files hold whole elements of data.token_dtype and ids below vocab_size (as
    `tokenize_source` checks them), and byte-level text's BOS/EOS ids fit the vocabulary. Text read through a
    `tokenizer` is checked against vocab_size only once tokenized."""
    listing = list_source(cfg)
    fingerprint = _keys(cfg, listing)[1]
    if listing.kind == "tokens":
        split_train_val(_token_source(cfg, listing, fingerprint, vocab_size), cfg.val_percent)  # enough tokens?
    elif cfg.tokenizer is None:
        _check_max_id(cfg, max(BOS_ID, EOS_ID), vocab_size)  # byte-level: every document ends with EOS
    return fingerprint


def tokenize_source(cfg: DataConfig, cache_dir: Path, vocab_size: int | None = None) -> Tokenized:
    """List, tokenize (or load the cache) and check every id < vocab_size (when given); DataError otherwise."""
    listing = list_source(cfg)
    token_key, fingerprint = _keys(cfg, listing)
    if listing.kind == "text":
        tokens, names, starts, ends, bos, eos, max_id = _text_corpus(cfg, listing, Path(cache_dir), token_key)
        if vocab_size is not None:
            _check_max_id(cfg, max_id, vocab_size)
        segments = Segments(
            files=(tokens,), file_S=np.zeros(len(names), dtype=np.int64), start_S=starts, end_S=ends, names=names
        )
        return Tokenized(fingerprint=fingerprint, segments=segments, pair=False, bos_id=bos, eos_id=eos)
    return _token_source(cfg, listing, fingerprint, vocab_size)


def window_counts(segments: Segments, seq_len: int, *, bos: bool, full_only: bool = False) -> np.ndarray:
    """Windows of seq_len each segment yields (trainer/data.py's TokenWindows cuts them): with a BOS token every
    content token is a target; without one a window needs one token more than it has targets (the first input).
    full_only counts only windows filled to seq_len."""
    usable_S = np.maximum(segments.end_S - segments.start_S - (0 if bos else 1), 0)
    return usable_S // seq_len if full_only else -(-usable_S // seq_len)


def require_windows(cfg: DataConfig, train: Segments, val: Segments, seq_len: int, *, bos: bool) -> None:
    """DataError unless both splits yield a window of seq_len: a trial needs one to train and one to evaluate."""
    for name, segments in (("train", train), ("validation", val)):
        if not window_counts(segments, seq_len, bos=bos).sum():
            raise DataError(f"data.source {cfg.source!r}: the {name} split yields no window of {seq_len} tokens")


def check_corpus(cfg: DataConfig, seq_len: int, vocab_size: int, cache_dir: Path) -> None:
    """Every check a trial's dataset build makes (trainer/data.py build_datasets), without torch: tokenize (or
    load the cache, which the trials then reuse), every id below vocab_size, and a window of seq_len in each
    split; DataError otherwise. `gatelab submit`, `resume` and `train` run it once per distinct dataset before
    they open any run, so that bad data leaves no run behind (checked_fingerprint catches what it can earlier,
    without tokenizing)."""
    tok = tokenize_source(cfg, Path(cache_dir), vocab_size)
    train, val = split_train_val(tok, cfg.val_percent)
    require_windows(cfg, train, val, seq_len, bos=tok.bos_id is not None)


def split_train_val(tok: Tokenized, val_percent: float) -> tuple[Segments, Segments]:
    """(train, validation) ranges: a nanoGPT pair's two files, else split by file (`_split`)."""
    if tok.pair:
        return tok.segments.subset(np.array([0])), tok.segments.subset(np.array([1]))
    # Without BOS a window needs 2 tokens: one input, one target.
    return _split(tok.segments, val_percent, min_tokens=1 if tok.bos_id is not None else 2)


def _split(segments: Segments, val_percent: float, min_tokens: int) -> tuple[Segments, Segments]:
    """Validation = files whose sha256(relative path) bucket < val_percent: the same on every machine and
    unaffected by adding other files (Python's hash() is salted per process). When that leaves a split
    empty (a single file, a handful of files), the last val_percent of the tokens is validation instead."""
    buckets = [int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big") % 10_000 for n in segments.names]
    is_val_S = np.array(buckets, dtype=np.int64) < round(val_percent * 100)
    if is_val_S.any() and not is_val_S.all():
        return segments.subset(~is_val_S), segments.subset(is_val_S)
    len_S = segments.end_S - segments.start_S
    total = int(len_S.sum())
    n_val = max(math.ceil(total * val_percent / 100), min_tokens)
    if total - n_val < min_tokens:
        raise DataError(
            f"data source {segments.names[0]!r}: {total} tokens are too few to split off {n_val} for validation"
        )
    seen_S1 = np.concatenate([[0], np.cumsum(len_S)])
    k = int(np.searchsorted(seen_S1, total - n_val, side="right")) - 1  # the segment the cut falls in
    cut = int(segments.start_S[k] + total - n_val - seen_S1[k])
    idx_S = np.arange(len(len_S))
    cut_inside = cut > segments.start_S[k]  # else the cut falls on a segment boundary
    train = segments.subset(idx_S[: k + 1] if cut_inside else idx_S[:k])
    val = segments.subset(idx_S[k:])
    if cut_inside:
        train.end_S[-1] = cut  # subset() copied the arrays, so this edits only this split
    val.start_S[0] = cut
    return train, val


def _walk(root: Path, suffix: str = "", skip: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    """Regular files under root, recursively, sorted; hidden names (.git, .DS_Store) are never data."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            if not name.startswith(".") and name.endswith(suffix) and path.is_file():
                out.append(path)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _glob_root(pattern: str) -> Path:
    """The leading directory of a glob without wildcards: paths are made relative to it (not absolute) so the
    fingerprint does not change when the data moves to another machine or folder."""
    parts = Path(pattern).parts
    literal = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        literal.append(part)
    return Path(*literal) if literal else Path(".")


def _train_val_pair(rels: list[str]) -> tuple[str, str] | None:
    """nanoGPT's convention: a directory with train.bin and val.bin (its prepare.py, meta.pkl are ignored)."""
    for ext in TOKEN_SUFFIXES:
        if f"train{ext}" in rels and f"val{ext}" in rels:
            return f"train{ext}", f"val{ext}"
    return None


def _listing(kind: str, root: Path, paths: list[Path], pair: bool, cfg: DataConfig) -> Listing:
    sizes = tuple(p.stat().st_size for p in paths)
    if not sum(sizes):
        raise DataError(f"data.source {cfg.source!r}: all {len(paths)} file(s) are empty (expected {kind} data)")
    return Listing(
        kind=kind, root=root, rel_paths=tuple(p.relative_to(root).as_posix() for p in paths), sizes=sizes, pair=pair
    )


def _keys(cfg: DataConfig, listing: Listing) -> tuple[str, str]:
    """(cache key of the tokens, fingerprint = tokens + split). The split is kept out of the cache key so
    changing val_percent reuses the cached tokens."""
    files: list[list] = [[r, s] for r, s in zip(listing.rel_paths, listing.sizes)]
    if cfg.source != "stdlib":
        # A user's file can be edited in place without changing its size; the interpreter's stdlib is not,
        # and hashing 31 MB on every warm load would cost more than the whole cached load.
        for entry, rel, size in zip(files, listing.rel_paths, listing.sizes):
            head, digest = _sample_digest(listing.root / rel, size)
            if listing.kind == "text":
                _refuse_binary(cfg, rel, head)
            entry.append(digest)
    tokens = {
        "version": FORMAT_VERSION,
        "kind": listing.kind,
        "files": files,
        "tokenizer": _file_sha256(cfg.tokenizer) if cfg.tokenizer else "bytes",
        "token_dtype": cfg.token_dtype if listing.kind == "tokens" else None,
    }
    split = {"val_percent": None if listing.pair else cfg.val_percent}
    return _hash(tokens), _hash({"tokens": tokens, "split": split})


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _sample_digest(path: Path, size: int) -> tuple[bytes, str]:
    """(the file's first _SAMPLE_BYTES, a digest of its head and tail)."""
    with open(path, "rb") as f:
        head = f.read(_SAMPLE_BYTES)
        f.seek(max(size - _SAMPLE_BYTES, 0))
        return head, hashlib.sha256(head + f.read(_SAMPLE_BYTES)).hexdigest()[:16]


def _refuse_binary(cfg: DataConfig, rel: str, head: bytes) -> None:
    """A NUL byte near the start marks binary data (the test git uses): byte-level tokenizing would train on it
    without complaint (every byte is a valid id), so a compressed file or a token array taken as text fails here."""
    nul = head.find(b"\0")
    if nul >= 0:
        raise DataError(
            f"data.source {cfg.source!r}: {rel} holds binary data (a NUL byte at offset {nul}), expected text; "
            "pre-tokenized ids belong in .bin/.npy files read with data.format 'tokens' or 'auto'"
        )


def _check_max_id(cfg: DataConfig, max_id: int, vocab_size: int) -> None:
    if max_id >= vocab_size:
        if cfg.tokenizer:  # the ids are the tokenizer's: its vocabulary is what does not fit
            raise DataError(
                f"data.tokenizer {cfg.tokenizer!r}: gives token id {max_id} on {cfg.source!r}, which needs "
                f"vocab_size > {max_id}; the model has {vocab_size}",
                "tokenizer",
            )
        raise DataError(
            f"data.source {cfg.source!r}: token id {max_id} needs vocab_size > {max_id}, the model has {vocab_size}"
        )


def _file_sha256(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"data.tokenizer {path!r}: no such file (expected a HF tokenizer.json)", "tokenizer")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _text_corpus(cfg: DataConfig, listing: Listing, cache_dir: Path, key: str):
    """Flat tokens (cached), per-document names/starts/ends, bos, eos and the largest id."""
    tokenizer = _load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None  # fails early even on a warm cache
    tokens_path, docs_path, meta_path = (cache_dir / f"{key}.{s}" for s in ("tokens.npy", "docs.npy", "meta.json"))
    meta = _read_cache(tokens_path, docs_path, meta_path, len(listing.rel_paths))
    if meta is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        flat, docs_D1, meta = _tokenize(listing, tokenizer)
        _save_atomic(tokens_path, lambda f: np.save(f, flat))
        _save_atomic(docs_path, lambda f: np.save(f, docs_D1))
        _save_atomic(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    docs_D1 = np.load(docs_path)
    keep = docs_D1[1:] > docs_D1[:-1]  # empty files (e.g. bare __init__.py) hold no tokens, not even EOS
    names = tuple(r for r, k in zip(listing.rel_paths, keep) if k)
    return (
        TokenFile(path=str(tokens_path.resolve()), raw_dtype=None),
        names,
        docs_D1[:-1][keep],
        docs_D1[1:][keep],
        meta["bos"],
        meta["eos"],
        meta["max_id"],
    )


def _read_cache(tokens_path: Path, docs_path: Path, meta_path: Path, n_docs: int) -> dict | None:
    """The cache's meta if all three files exist and agree, else None (rebuild)."""
    try:
        meta = json.loads(meta_path.read_text())
        docs_D1 = np.load(docs_path)
        n_tokens = len(np.load(tokens_path, mmap_mode="r"))
    except (OSError, ValueError):
        return None
    if len(docs_D1) != n_docs + 1 or int(docs_D1[-1]) != n_tokens or meta.get("n_tokens") != n_tokens:
        return None
    return meta


def _tokenize(listing: Listing, tokenizer) -> tuple[np.ndarray, np.ndarray, dict]:
    if tokenizer is None:
        bos, eos, dtype = BOS_ID, EOS_ID, np.uint16
    else:
        tok, bos, eos = tokenizer
        dtype = np.uint16 if tok.get_vocab_size() <= 1 << 16 else np.uint32
    parts = []
    for rel in listing.rel_paths:
        raw = (listing.root / rel).read_bytes()
        if tokenizer is None:
            parts.append(np.frombuffer(raw, dtype=np.uint8))
        else:
            ids = tok.encode(raw.decode("utf-8", errors="replace"), add_special_tokens=False).ids
            parts.append(np.asarray(ids, dtype=dtype))
    lengths = np.array([len(p) + (len(p) > 0) for p in parts], dtype=np.int64)  # + EOS after each document
    docs_D1 = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.empty(int(docs_D1[-1]), dtype=dtype)
    for part, start, end in zip(parts, docs_D1[:-1], docs_D1[1:]):
        if end > start:
            flat[start : end - 1] = part
            flat[end - 1] = eos
    if not len(flat):
        raise DataError(f"data source {listing.root}: the tokenizer produced no tokens (expected text)")
    max_id = max(int(flat.max()), bos)
    return flat, docs_D1, {"bos": bos, "eos": eos, "max_id": max_id, "n_tokens": len(flat), "version": FORMAT_VERSION}


def _load_tokenizer(path: str):
    """(tokenizer, bos_id, eos_id) from a HF tokenizer.json; `tokenizers` is optional, not a dependency."""
    try:
        tokenizers = importlib.import_module("tokenizers")
    except ImportError:
        raise DataError(
            f"data.tokenizer {path!r} needs the 'tokenizers' package: pip install tokenizers "
            "(or unset data.tokenizer for byte-level tokens)",
            "tokenizer",
        ) from None
    if not os.path.isfile(path):
        raise DataError(f"data.tokenizer {path!r}: no such file (expected a HF tokenizer.json)", "tokenizer")
    tok = tokenizers.Tokenizer.from_file(str(path))
    bos = next((i for i in map(tok.token_to_id, _TOKENIZER_BOS) if i is not None), None)
    eos = next((i for i in map(tok.token_to_id, _TOKENIZER_EOS) if i is not None), None)
    if bos is None or eos is None:
        raise DataError(
            f"data.tokenizer {path!r}: no BOS/EOS special token found "
            f"(expected one of {_TOKENIZER_BOS} and one of {_TOKENIZER_EOS})",
            "tokenizer",
        )
    return tok, bos, eos


def _token_source(cfg: DataConfig, listing: Listing, fingerprint: str, vocab_size: int | None) -> Tokenized:
    """Validated pre-tokenized files, one segment each (a train/val pair needs 2 tokens in each file)."""
    files = tuple(_token_file(listing.root / rel, cfg.token_dtype, vocab_size) for rel in listing.rel_paths)
    lengths = np.array([len(f.open()) for f in files], dtype=np.int64)
    if listing.pair and lengths.min() < 2:
        raise DataError(
            f"data.source {cfg.source!r}: {listing.rel_paths[int(lengths.argmin())]} holds "
            f"{lengths.min()} tokens, expected at least 2"
        )
    segments = Segments(
        files=files,
        file_S=np.arange(len(files), dtype=np.int64),
        start_S=np.zeros_like(lengths),
        end_S=lengths,
        names=listing.rel_paths,
    )
    return Tokenized(fingerprint=fingerprint, segments=segments, pair=listing.pair, bos_id=None, eos_id=None)


def _token_file(path: Path, dtype: str, vocab_size: int | None) -> TokenFile:
    """A validated pre-tokenized file: whole elements, integer ids, and every id < vocab_size."""
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:  # else numpy guesses a pickle and says so
                raise DataError(
                    f"data.source {str(path)!r}: no .npy header (expected a token array written by numpy.save)"
                )
        try:
            arr = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise DataError(f"data.source {str(path)!r}: not a readable .npy token array ({e})") from None
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise DataError(
                f"data.source {str(path)!r}: expected a 1-D integer token array, "
                f"got shape {arr.shape} dtype {arr.dtype}"
            )
        tf = TokenFile(path=str(path.resolve()), raw_dtype=None)
    else:
        itemsize = np.dtype(dtype).itemsize
        if path.stat().st_size % itemsize:
            raise DataError(
                f"data.source {str(path)!r}: size {path.stat().st_size} is not a multiple of "
                f"{itemsize} bytes (expected raw {dtype} tokens; set data.token_dtype)"
            )
        tf = TokenFile(path=str(path.resolve()), raw_dtype=dtype)
        arr = tf.open()
    if vocab_size is not None and len(arr):
        lo, hi = _id_range(arr)
        if lo < 0 or hi >= vocab_size:
            raise DataError(
                f"data.source {str(path)!r}: token ids span [{lo}, {hi}], expected 0 <= id < "
                f"vocab_size={vocab_size} (wrong vocab_size or data.token_dtype?)"
            )
    return tf


def _id_range(arr: np.ndarray) -> tuple[int, int]:
    """Min and max id: exact up to _FULL_CHECK_TOKENS, else over 64 evenly spaced 1M-token chunks (reading a
    multi-GB file in full before training would cost minutes; a wrong dtype or vocab shows up everywhere)."""
    if len(arr) <= _FULL_CHECK_TOKENS:
        chunks = [arr[i : i + _CHECK_CHUNK * 16] for i in range(0, len(arr), _CHECK_CHUNK * 16)]
    else:
        starts = np.linspace(0, len(arr) - _CHECK_CHUNK, 64).astype(np.int64)
        chunks = [arr[s : s + _CHECK_CHUNK] for s in starts]
    return min(int(c.min()) for c in chunks), max(int(c.max()) for c in chunks)


def _save_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temp file in the same directory, then os.replace: a reader (another Ray worker on the same
    node) sees either no file or a complete one, never a half-written cache."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared by every worker on the node
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
