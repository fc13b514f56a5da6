"""trainer.corpus / trainer.data: sources, windows, split, fingerprint, cache, errors, sample order."""

from __future__ import annotations

import pickle
import shutil
import sys

import numpy as np
import pytest
import torch

from gatelab.trainer.corpus import (
    BOS_ID,
    EOS_ID,
    DataConfig,
    DataError,
    checked_fingerprint,
    data_fingerprint,
    list_source,
)
from gatelab.trainer.data import (
    IGNORE_INDEX,
    build_datasets,
    epoch_permutation,
    load_corpus,
    sample_index,
    token_counts,
)

from fake_tokenizer import install as install_fake_tokenizer

VOCAB = 258


def _text(n: int, seed: int = 0) -> bytes:
    """n printable bytes, not periodic, so a misplaced window cannot match by accident."""
    return bytes(np.random.default_rng(seed).integers(32, 127, n, dtype=np.uint8))


def _targets(ds) -> list[int]:
    """All non-ignored targets of a dataset, in window order."""
    out: list[int] = []
    for i in range(len(ds)):
        y = ds[i][1]
        out += y[y != IGNORE_INDEX].tolist()
    return out


def test_text_file_windows_cover_the_file(tmp_path):
    data = _text(1000)
    (tmp_path / "book.txt").write_bytes(data)
    splits = build_datasets(DataConfig(source=str(tmp_path / "book.txt"), val_percent=5), 16, tmp_path / "c", VOCAB)
    x, y = splits.train[0]
    assert x.shape == y.shape == (16,) and x.dtype == y.dtype == torch.int64
    # One file: the split falls back to the last 5% of the tokens (file bytes + EOS = 1001 tokens).
    assert (splits.train_tokens, splits.val_tokens) == (950, 51)
    assert len(splits.train) == -(-950 // 16) and len(splits.val) == -(-51 // 16)
    for ds in (splits.train, splits.val):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x[0] == BOS_ID
            real = y != IGNORE_INDEX
            assert torch.equal(x[1:][real[1:]], y[:-1][real[1:]])  # targets are the inputs shifted by one
    # Every token is a target exactly once, in order: the windows cover the whole file, not its opening bytes.
    assert _targets(splits.train) + _targets(splits.val) == list(data) + [EOS_ID]


def test_directory_split_by_file(tmp_path):
    src = tmp_path / "src"
    docs = {f"d{i:03d}/f{i:03d}.txt": _text(40 + i, seed=i) for i in range(200)}
    for rel, data in docs.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "empty.txt").write_bytes(b"")
    (src / ".hidden").write_bytes(b"never data")
    corpus = load_corpus(DataConfig(source=str(src), val_percent=10), tmp_path / "cache", VOCAB)
    train, val = set(corpus.train.names), set(corpus.val.names)
    assert not train & val and train | val == set(docs)
    assert 5 <= len(val) <= 40  # ~10% of 200 files
    splits = build_datasets(DataConfig(source=str(src), val_percent=10), 32, tmp_path / "cache", VOCAB)
    for ds in (splits.train, splits.val):
        for i in range(0, len(ds), 7):
            s, offset = ds.locate(i)
            content = ds[i][1][ds[i][1] != IGNORE_INDEX].tolist()
            expected = list(docs[ds.segments.names[s]]) + [EOS_ID]
            assert content == expected[offset : offset + 32]


def test_glob_filters_files(tmp_path):
    (tmp_path / "a.md").write_bytes(b"# title\n" * 20)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_bytes(b"body\n" * 30)
    (tmp_path / "c.txt").write_bytes(b"not markdown")
    listing = list_source(DataConfig(source=str(tmp_path / "**" / "*.md")))
    assert listing.kind == "text" and listing.rel_paths == ("a.md", "sub/b.md")


def test_nanogpt_bin_memmap_and_tail_split(tmp_path):
    tokens = (np.arange(1000) * 7 % 50).astype(np.uint16)
    tokens.tofile(tmp_path / "shard.bin")
    splits = build_datasets(DataConfig(source=str(tmp_path / "shard.bin"), val_percent=10), 16, tmp_path, 50)
    assert (splits.train_tokens, splits.val_tokens) == (900, 100)
    x, y = splits.train[1]  # no BOS on pre-tokenized data: contiguous chunks, stride seq_len
    assert x.tolist() == tokens[16:32].tolist() and y.tolist() == tokens[17:33].tolist()
    x, y = splits.val[0]
    assert x.tolist() == tokens[900:916].tolist()
    assert isinstance(splits.train.segments.files[0].open(), np.memmap)


def test_npy_uint32_via_memmap(tmp_path):
    tokens = np.arange(70_000, 70_500, dtype=np.uint32)
    np.save(tmp_path / "toks.npy", tokens)
    splits = build_datasets(DataConfig(source=str(tmp_path / "toks.npy")), 8, tmp_path, 80_000)
    assert isinstance(splits.train.segments.files[0].open(), np.memmap)
    x, y = splits.train[2]
    assert x.tolist() == tokens[16:24].tolist() and y.tolist() == tokens[17:25].tolist()


def test_train_val_bin_pair_in_nanogpt_directory(tmp_path):
    np.full(300, 3, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.full(100, 5, dtype=np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "input.txt").write_text("raw text nanoGPT keeps beside the shards")
    (tmp_path / "meta.pkl").write_bytes(b"\x80\x04")
    splits = build_datasets(DataConfig(source=str(tmp_path)), 10, tmp_path / "cache", 10)
    assert (splits.train_tokens, splits.val_tokens) == (300, 100)
    assert set(splits.train[0][0].tolist()) == {3} and set(splits.val[0][0].tolist()) == {5}


def test_val_at_longer_windows(tmp_path):
    (tmp_path / "src").mkdir()
    for i in range(50):
        (tmp_path / "src" / f"f{i}.txt").write_bytes(_text(100 + 10 * i, seed=i))
    splits = build_datasets(DataConfig(source=str(tmp_path / "src"), val_percent=20), 16, tmp_path / "c", VOCAB)
    long = splits.val_at(128)
    assert long.seq_len == 128 and all(long[i][0][0] == BOS_ID for i in range(len(long)))
    full = splits.val_at(128, full_only=True)
    assert 0 < len(full) < len(long)
    assert all((full[i][1] != IGNORE_INDEX).all() for i in range(len(full)))
    assert set(long.segments.names) == set(splits.val.segments.names)
    with pytest.raises(DataError, match="no full window"):
        splits.val_at(100_000, full_only=True)


@pytest.mark.parametrize("source, match", [("missing.txt", "no such file"), ("nope/*.txt", "matched no files")])
def test_missing_source_is_a_data_error(tmp_path, source, match):
    with pytest.raises(DataError, match=match) as e:
        build_datasets(DataConfig(source=str(tmp_path / source)), 16, tmp_path, VOCAB)
    assert source in str(e.value)


def test_empty_file_and_directory_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden_only").mkdir()
    (tmp_path / "hidden_only" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="holds no files"):
        build_datasets(DataConfig(source=str(tmp_path / "empty")), 16, tmp_path, VOCAB)
    with pytest.raises(DataError, match="holds no files"):
        build_datasets(DataConfig(source=str(tmp_path / "hidden_only")), 16, tmp_path, VOCAB)
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        build_datasets(DataConfig(source=str(tmp_path / "e.txt")), 16, tmp_path, VOCAB)


def test_token_ids_beyond_vocab_are_data_errors(tmp_path):
    np.array([1, 2, 300, 4] * 10, dtype=np.uint16).tofile(tmp_path / "t.bin")
    with pytest.raises(DataError, match=r"\[1, 300\].*vocab_size=258"):
        build_datasets(DataConfig(source=str(tmp_path / "t.bin")), 4, tmp_path, VOCAB)
    (tmp_path / "b.txt").write_bytes(b"bytes need 258 ids")
    with pytest.raises(DataError, match="vocab_size > 257"):
        build_datasets(DataConfig(source=str(tmp_path / "b.txt")), 4, tmp_path, 100)


def test_checked_fingerprint_refuses_bad_ids_without_tokenizing(tmp_path):
    np.array([1, 2, 300, 4] * 10, dtype=np.uint16).tofile(tmp_path / "t.bin")
    with pytest.raises(DataError, match=r"\[1, 300\].*vocab_size=258"):
        checked_fingerprint(DataConfig(source=str(tmp_path / "t.bin")), VOCAB)
    (tmp_path / "b.txt").write_bytes(b"bytes need 258 ids")
    text = DataConfig(source=str(tmp_path / "b.txt"))
    with pytest.raises(DataError, match="vocab_size > 257"):
        checked_fingerprint(text, 100)
    assert checked_fingerprint(text, VOCAB) == build_datasets(text, 4, tmp_path / "cache", VOCAB).fingerprint


def test_binary_file_taken_as_text_is_a_data_error(tmp_path):
    (tmp_path / "a.txt").write_bytes(_text(100))
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DataError, match=r"logo.png holds binary data \(a NUL byte at offset 8\)"):
        data_fingerprint(DataConfig(source=str(tmp_path)))
    assert data_fingerprint(DataConfig(source=str(tmp_path / "*.txt")))  # narrowed to the text by a glob


def test_malformed_token_files_are_data_errors(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    with pytest.raises(DataError, match="token_dtype"):
        build_datasets(DataConfig(source=str(tmp_path / "odd.bin")), 4, tmp_path, VOCAB)
    (tmp_path / "mixed").mkdir()
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "mixed" / "a.bin")
    (tmp_path / "mixed" / "README").write_text("about the shards")
    with pytest.raises(DataError, match="data.format"):
        build_datasets(DataConfig(source=str(tmp_path / "mixed")), 4, tmp_path, VOCAB)
    splits = build_datasets(DataConfig(source=str(tmp_path / "mixed"), format="tokens"), 4, tmp_path, VOCAB)
    assert splits.train_tokens + splits.val_tokens == 100
    with pytest.raises(DataError, match="format='jsonl': expected 'auto'") as err:
        DataConfig(format="jsonl")
    assert err.value.key == "format"


def test_tokenizer_without_tokenizers_package(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("hello " * 50)
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` raise ImportError
    cfg = DataConfig(source=str(tmp_path / "a.txt"), tokenizer=str(tmp_path / "tokenizer.json"))
    with pytest.raises(DataError, match="pip install tokenizers"):
        build_datasets(cfg, 8, tmp_path / "c", VOCAB)


def test_tokenizer_file_tokenizes_text(tmp_path, monkeypatch):
    """The `tokenizers` path against a stand-in with the same API (the package is optional, not installed)."""

    install_fake_tokenizer(monkeypatch)
    (tmp_path / "a.txt").write_text("a bb ccc dddd " * 100)
    (tmp_path / "tokenizer.json").write_text("{}")
    cfg = DataConfig(source=str(tmp_path / "a.txt"), tokenizer=str(tmp_path / "tokenizer.json"))
    splits = build_datasets(cfg, 8, tmp_path / "c", 70_000)
    x, y = splits.train[0]
    assert x.tolist() == [69_999] + [60_001, 60_002, 60_003, 60_004, 60_001, 60_002, 60_003]
    assert splits.train_tokens + splits.val_tokens == 401  # 400 words + EOS
    assert cfg.tokenizer and data_fingerprint(cfg) != data_fingerprint(DataConfig(source=cfg.source))


def test_fingerprint_and_cache(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_bytes(_text(500))
    cfg = DataConfig(source=str(src))
    fp = data_fingerprint(cfg)
    assert len(fp) == 16 and build_datasets(cfg, 16, tmp_path / "c", VOCAB).fingerprint == fp
    cached = sorted((tmp_path / "c").iterdir())
    assert [p.suffix for p in cached] == [".npy", ".json", ".npy"]  # docs, meta, tokens
    mtimes = [p.stat().st_mtime_ns for p in cached]
    build_datasets(cfg, 16, tmp_path / "c", VOCAB)
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # warm: read, not rebuilt
    assert data_fingerprint(DataConfig(source=str(src), val_percent=2)) != fp  # the split changes the tokens
    shutil.copytree(src, tmp_path / "moved")
    assert data_fingerprint(DataConfig(source=str(tmp_path / "moved"))) == fp  # paths are relative
    (src / "a.txt").write_bytes(_text(500, seed=1))  # same size, other content
    assert data_fingerprint(cfg) != fp


def test_reuse_keeps_one_load_per_process_and_arguments(tmp_path):
    (tmp_path / "a.txt").write_bytes(_text(3000))
    cfg = DataConfig(source=str(tmp_path / "a.txt"))
    first = build_datasets(cfg, 64, tmp_path / "c", VOCAB, reuse=True)
    assert build_datasets(cfg, 64, tmp_path / "c", VOCAB, reuse=True) is first  # a grid worker's next trial
    assert build_datasets(cfg, 32, tmp_path / "c", VOCAB, reuse=True) is not first  # other windows
    fresh = build_datasets(cfg, 64, tmp_path / "c", VOCAB)
    assert fresh is not first and fresh.fingerprint == first.fingerprint and len(fresh.train) == len(first.train)


def test_dataset_pickles_without_its_memmap(tmp_path):
    (tmp_path / "a.txt").write_bytes(_text(3000))
    ds = build_datasets(DataConfig(source=str(tmp_path / "a.txt")), 64, tmp_path / "c", VOCAB).train
    first = ds[5]
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # offsets only, not the 6 KB token array copied per worker
    again = pickle.loads(blob)[5]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_epoch_permutation_is_deterministic_permutation():
    p = epoch_permutation(1000, seed=3, epoch=2)
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, epoch_permutation(1000, seed=3, epoch=2))
    assert not np.array_equal(p, epoch_permutation(1000, seed=3, epoch=3))
    assert not np.array_equal(p, epoch_permutation(1000, seed=4, epoch=2))
    assert [sample_index(2000 + j, 1000, 3) for j in range(5)] == p[:5].tolist()


@pytest.fixture(scope="module")
def stdlib_splits(tmp_path_factory):
    cache = tmp_path_factory.mktemp("stdlib_cache")
    return build_datasets(DataConfig(), 128, cache, VOCAB), cache


def test_stdlib_corpus(stdlib_splits):
    splits, cache = stdlib_splits
    again = build_datasets(DataConfig(), 128, cache, VOCAB)
    assert splits.fingerprint == again.fingerprint == data_fingerprint(DataConfig())
    assert (splits.train_tokens, splits.val_tokens) == token_counts(DataConfig(), cache)
    assert splits.train_tokens > 10_000_000 and splits.val_tokens > 50_000
    train, val = set(splits.train.segments.names), set(splits.val.segments.names)
    assert val and not train & val
    assert all(name.endswith(".py") and "site-packages" not in name for name in train | val)
    ds = splits.train
    deep = []
    for i in np.linspace(0, len(ds) - 1, 3000).astype(int):
        x, _ = ds[i]
        assert x[0] == BOS_ID
        s, offset = ds.locate(int(i))
        if offset > 10 * ds.seq_len:
            deep.append((int(i), s, offset))
    assert deep  # windows reach deep into documents, not only their opening bytes
    i, s, offset = deep[len(deep) // 2]
    root = list_source(DataConfig()).root
    raw = (root / ds.segments.names[s]).read_bytes()
    assert ds[i][0][1:].tolist() == list(raw[offset : offset + ds.seq_len - 1])
