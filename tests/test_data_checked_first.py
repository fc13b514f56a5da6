"""The two data errors that only tokenizing or cutting windows finds: token ids past the model's vocabulary from
a `tokenizers` file, and a validation split with no window of the training length. `gatelab submit`, `resume`
and `train` find them before they open any run (trainer.corpus.check_corpus): exit 2, one line at the grid's
data key, no MLflow store, no server, no Ray."""

import numpy as np
import pytest
import ray
import yaml

from gatelab.grid.cli.main import main

from fake_tokenizer import install as install_fake_tokenizer


def _grid(tmp_path, data: dict):
    path = tmp_path / "grid.yaml"
    base = {
        "model": {"preset": "tiny"},
        "data": data,
        "schedule": {"max_steps": 4, "batch_size": 2, "seq_len": 16},
        "eval": {"every": 4, "batches": 1, "long_context_factors": [1]},
    }
    path.write_text(yaml.safe_dump({"name": "data-first", "base": base, "axes": {"variant": ["baseline"]}}))
    return path


def _refused(capsys, home, *command) -> str:
    assert main([*command, "--home", str(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not (home / "mlflow.db").exists() and not (home / "mlflow-server.json").exists()
    assert not ray.is_initialized()
    return err[0]


def test_ids_past_the_vocabulary_from_a_tokenizer_are_refused_before_any_run(tmp_path, capsys, monkeypatch):
    install_fake_tokenizer(monkeypatch)  # its ids run past a tiny model's 258-id vocabulary
    (tmp_path / "a.txt").write_text("a bb ccc dddd " * 100)
    (tmp_path / "tokenizer.json").write_text("{}")
    grid = _grid(tmp_path, {"source": str(tmp_path / "a.txt"), "tokenizer": str(tmp_path / "tokenizer.json")})
    for command in ("submit", "resume"):
        line = _refused(capsys, tmp_path / "home", command, str(grid))
        assert str(grid) in line and "base.data.tokenizer" in line and "vocab_size > 69999" in line, line


def _shards_with_a_one_token_validation_file(tmp_path):
    """Token shards split by file: shard362.bin's name falls in the 1% validation bucket (sha256 of the name,
    trainer/corpus.py `_split`), and holding one token it has no input-target pair, so no window."""
    data = tmp_path / "shards"
    data.mkdir()
    np.full(3000, 3, dtype=np.uint16).tofile(data / "shard0.bin")
    np.full(1, 5, dtype=np.uint16).tofile(data / "shard362.bin")
    return data


def test_a_validation_split_without_a_window_is_refused_before_any_run(tmp_path, capsys):
    grid = _grid(tmp_path, {"source": str(_shards_with_a_one_token_validation_file(tmp_path))})
    line = _refused(capsys, tmp_path / "home", "submit", str(grid))
    assert str(grid) in line and "base.data.source" in line and "validation split yields no window" in line, line
    # `gatelab train` on the same data as a trial file: the same check before its run
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump(yaml.safe_load(grid.read_text())["base"]))
    line = _refused(capsys, tmp_path / "home", "train", str(trial))
    assert str(trial) in line and "validation split yields no window" in line, line


@pytest.mark.parametrize("command", [["submit", "--dry-run"], ["status"]])
def test_the_dry_run_and_status_read_no_data_whole(tmp_path, command):
    """The check tokenizes: the dry run (and status) leave it out, so they stay instant on a large corpus."""
    data = _shards_with_a_one_token_validation_file(tmp_path)
    grid = str(_grid(tmp_path, {"source": str(data)}))
    assert main([command[0], grid, *command[1:], "--home", str(tmp_path / "home")]) == 0
