"""grid.worker: the first import of the trainer runs with the garbage collector paused; a trial lost without a
result is recorded in MLflow by the driver, unless another process holds it or MLflow cannot be reached."""

import gc
import sys

import pytest

from gatelab.grid.dispatch.worker import _first_import_without_collector


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


def _lost_job(tmp_path):
    from gatelab.grid.dispatch.worker import TrialJob
    from gatelab.trainer.config.trial import TrialConfig

    return TrialJob(
        key="k1",
        config=TrialConfig(),
        run_name="baseline [k1]",
        tags={},
        tracking_uri="http://127.0.0.1:9",  # nothing listens on the discard port
        experiment="e",
        parent_run_id="p",
        checkpoint_root=str(tmp_path),
        cache_dir=str(tmp_path),
        home=str(tmp_path),
    )


def test_a_lost_trial_held_by_another_process_is_left_to_it(tmp_path):
    from gatelab.grid.dispatch.worker import record_unreported_failure
    from gatelab.tracking.runs.file_lock import file_lock
    from gatelab.trainer.config.trial_folder import TrialFolder

    with file_lock(TrialFolder(tmp_path / "k1").lock) as held:  # another submit is running the trial again
        assert held
        message = record_unreported_failure(_lost_job(tmp_path), RuntimeError("worker died\nmore"))
    assert message == "RuntimeError: worker died"  # nothing was sent to MLflow (nothing listens there)


def test_a_lost_trial_that_cannot_be_recorded_does_not_stop_the_driver(tmp_path, monkeypatch):
    from gatelab.grid.dispatch.worker import record_unreported_failure

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    message = record_unreported_failure(_lost_job(tmp_path), RuntimeError("worker died"))
    assert message.startswith("RuntimeError: worker died (not recorded in MLflow: ")
