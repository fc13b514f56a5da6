"""The Ray worker's first import of the trainer runs with the garbage collector paused (grid.worker)."""
import gc
import sys

import pytest

from grid.worker import _first_import_without_collector


def test_the_first_import_pauses_the_collector_then_freezes_what_it_made(tmp_path, monkeypatch):
    (tmp_path / "gatelab_fake_heavy.py").write_text("TABLE = [[i] for i in range(1000)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    frozen_before = gc.get_freeze_count()
    try:
        with _first_import_without_collector("gatelab_fake_heavy"):
            assert not gc.isenabled()
            import gatelab_fake_heavy  # noqa: F401
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + 1000  # the module's objects left the collector's view
        with _first_import_without_collector("gatelab_fake_heavy"):  # loaded: nothing paused again
            assert gc.isenabled()
    finally:
        gc.unfreeze()
        sys.modules.pop("gatelab_fake_heavy", None)


def test_the_collector_comes_back_when_the_import_fails():
    try:
        with pytest.raises(ImportError), _first_import_without_collector("gatelab_missing_module"):
            import gatelab_missing_module  # noqa: F401
    finally:
        gc.unfreeze()
    assert gc.isenabled()
