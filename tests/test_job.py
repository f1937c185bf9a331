import pytest

from worker_kit.job import TERMINAL_STATES, JobRecord, JobState
from worker_kit.protocol import OutputItem


def test_terminal_states_are_exactly_the_four_ends():
    assert {s for s in JobState if s.is_terminal} == TERMINAL_STATES
    assert TERMINAL_STATES == {JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED}
    assert str(JobState.IN_QUEUE) == "IN_QUEUE"


def test_status_shows_progress_while_running_and_output_once_ended():
    job = JobRecord(id="j1", endpoint="ep", input={"x": 1}, created_at=100.0)
    job.state, job.started_at, job.progress = JobState.IN_PROGRESS, 101.5, {"pct": 50}
    status = job.to_status()
    assert status["status"] == "IN_PROGRESS"
    assert status["output"] == {"pct": 50}
    assert status["delayTime"] == 1500

    job.state, job.finished_at, job.output = JobState.COMPLETED, 103.0, "done"
    status = job.to_status()
    assert status["output"] == "done"
    assert status["executionTime"] == 1500
    assert "error" not in status


def test_failed_status_carries_error_and_detail():
    job = JobRecord(id="j2", endpoint="ep", input=None, state=JobState.FAILED, error="ValueError: boom",
                    error_detail={"type": "ValueError", "message": "boom", "traceback": "..."}, retries=1)
    status = job.to_status()
    assert status["error"] == "ValueError: boom"
    assert status["errorDetail"]["type"] == "ValueError"
    assert status["retries"] == 1


@pytest.mark.parametrize(
    "item, reason",
    [
        ("x", "must be an object"),
        ({"seq": -1, "kind": "chunk"}, "from 0 to"),
        ({"seq": True, "kind": "chunk"}, "from 0 to"),
        ({"seq": 2**62 + 1, "kind": "chunk"}, "from 0 to"),
        ({"seq": 1.5, "kind": "chunk"}, "from 0 to"),
        ({"seq": 0, "kind": "other"}, "kind"),
    ],
)
def test_output_item_rejects_malformed_items(item, reason):
    with pytest.raises(ValueError, match=reason):
        OutputItem.from_wire(item)


def test_output_item_round_trips():
    item = OutputItem(seq=3, kind="progress", data={"step": 2})
    assert OutputItem.from_wire(item.to_wire()) == item


def test_one_policy_rule_for_clients_and_workers() -> None:
    from worker_kit.job import Policy

    # A timeout the client set is sent on; the endpoint's default (explicit False) never is.
    assert Policy(execution_timeout_ms=5000).to_wire() == {"executionTimeout": 5000, "ttl": 86_400_000}
    assert Policy().to_wire() == {"ttl": 86_400_000}
    endpoint_default = Policy(execution_timeout_ms=5000, execution_timeout_explicit=False)
    assert endpoint_default.to_wire() == {"ttl": 86_400_000}
    assert Policy(execution_timeout_explicit=True).to_wire()["executionTimeout"] == 600_000
