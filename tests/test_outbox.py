"""tracking/runs/outbox.py: every request the outbox sends is one MLflow's server accepts, whatever backlog built up
while the server was slow or away, and it carries the operations in the order they were logged.

The limits are MLflow's own (mlflow.utils.validation): at most 1000 metrics, 100 params and 100 tags, 1000 of
them together, and 1 MB of request. A backlog of exactly 1000 metrics followed by a tag (a status) once became
one request of 1001 entities, refused, and a trial that had trained to its end was recorded failed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import LogBatch
from mlflow.utils.proto_json_utils import message_to_json
from mlflow.utils.validation import (
    MAX_BATCH_LOG_REQUEST_SIZE,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    _validate_batch_log_api_req,
    _validate_batch_log_limits,
)

from gatelab.tracking.runs.outbox import KINDS, batch_ops, merged


def _log_batch(op: dict) -> LogBatch:
    return LogBatch(
        run_id="0" * 32,
        metrics=[Metric(k, float(v), int(t), int(s)).to_proto() for k, v, t, s in op["metrics"]],
        params=[Param(k, v).to_proto() for k, v in op["params"]],
        tags=[RunTag(k, v).to_proto() for k, v in op["tags"]],
    )


def assert_accepted(op: dict) -> None:
    """What MLflow's server checks of a log-batch request, with its own code: the counts, and the byte size of
    the JSON body that gatelab's RunWriter sends (message_to_json)."""
    _validate_batch_log_limits(op["metrics"], op["params"], op["tags"])
    _validate_batch_log_api_req(message_to_json(_log_batch(op)))


def assert_in_order(ops: list[dict], requests: list[tuple[dict, int]]) -> None:
    """Each request carries the next `count` operations whole, in order; a non-batch operation goes alone."""
    assert sum(count for _, count in requests) == len(ops)
    position = 0
    for request, count in requests:
        carried = ops[position : position + count]
        position += count
        if request["op"] != "batch":
            assert carried == [request]
            continue
        assert all(op["op"] == "batch" for op in carried)
        for kind in KINDS:
            assert request[kind] == [entity for op in carried for entity in op[kind]], kind


def _metrics(n: int, step: int) -> list[tuple]:
    return [(f"layer_{i}/f_attn", 0.5, 1_765_000_000_000, step) for i in range(n)]


def test_a_backlog_of_1000_metrics_then_a_tag_is_sent_as_requests_mlflow_accepts():
    ops = [op for step in range(4) for op in batch_ops(metrics=_metrics(250, step))]
    ops += batch_ops(tags=[("gatelab.status", "finished")])
    requests = merged(ops)
    for request, _ in requests:
        assert_accepted(request)
    assert [len(r["metrics"]) + len(r["tags"]) for r, _ in requests] == [1000, 1]
    assert_in_order(ops, requests)


def test_one_call_over_the_limits_becomes_several_accepted_operations():
    long_tags = [(f"note_{i}", "x" * MAX_TAG_VAL_LENGTH) for i in range(150)]  # 1.2 MB: over the size limit too
    for ops, entities in (
        (batch_ops(metrics=_metrics(2500, 0)), _metrics(2500, 0)),
        (batch_ops(tags=long_tags), long_tags),
    ):
        assert len(ops) > 1
        for op in ops:
            assert_accepted(op)
        kind = "metrics" if ops[0]["metrics"] else "tags"
        assert [tuple(e) for op in ops for e in op[kind]] == entities  # all of them, in order


def test_the_limits_are_mlflows_own():
    with pytest.raises(MlflowException, match="at most 1000 metrics, params, and tags"):
        _validate_batch_log_limits(_metrics(1000, 0), [], [RunTag("a", "b")])
    assert MAX_BATCH_LOG_REQUEST_SIZE == 1_000_000  # the figure ENTITY_JSON_OVERHEAD's margin was measured at


_keys = st.text(alphabet="abcdefghij_/.0123456789", min_size=1, max_size=250)
_values = st.floats(allow_nan=True, allow_infinity=True)
_metric_calls = st.lists(st.tuples(_keys, _values), min_size=1, max_size=1200).map(
    lambda pairs: batch_ops(metrics=[(k, v, 1_765_000_000_000, 7) for k, v in pairs])
)
_param_calls = st.lists(st.tuples(_keys, st.text(max_size=MAX_PARAM_VAL_LENGTH)), min_size=1, max_size=150).map(
    lambda params: batch_ops(params=params)
)
_tag_calls = st.lists(
    st.tuples(_keys, st.one_of(st.text(max_size=40), st.just("é" * MAX_TAG_VAL_LENGTH))), min_size=1, max_size=150
).map(lambda tags: batch_ops(tags=tags))
_other_ops = st.sampled_from(
    [[{"op": "status", "status": "FINISHED", "end_time": 1}], [{"op": "artifact", "path": "/a/b.json", "dir": None}]]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_metric_calls, _param_calls, _tag_calls, _other_ops), max_size=12))
def test_any_sequence_of_operations_merges_into_accepted_requests_in_order(calls):
    ops = [op for call in calls for op in call]
    for op in ops:
        if op["op"] == "batch":
            assert_accepted(op)  # each operation alone, as batch_ops made it
    requests = merged(ops)
    for request, _ in requests:
        if request["op"] == "batch":
            assert_accepted(request)
    assert_in_order(ops, requests)


@pytest.mark.mlflow
def test_a_trial_that_built_a_backlog_of_1000_metrics_ends_finished_on_a_real_server(served_store):
    from mlflow import MlflowClient

    from gatelab.tracking.runs.mlflow_tracker import MlflowTracker

    _, uri = served_store
    # No sender thread and no flush before 10,000 metrics: the backlog a slow or absent server leaves behind.
    tracker = MlflowTracker.create(uri, "backlog", flush_every=10_000, flush_interval_s=3600, asynchronous=False)
    for step in range(4):
        tracker.log_metrics({f"layer_{i}/f_attn": i / 250 + step for i in range(250)}, step=step)
    tracker.set_status("finished")  # a tag after exactly 1000 metrics
    tracker.close()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["gatelab.status"] == "finished"
    assert len(run.data.metrics) == 250
    history = MlflowClient(uri).get_metric_history(tracker.run_id, "layer_7/f_attn")
    assert [(m.step, m.value) for m in history] == [(step, 7 / 250 + step) for step in range(4)]
