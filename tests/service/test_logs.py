"""JSON log lines carry the message and the fields passed through `extra`."""

from __future__ import annotations

import json
import logging

from worker_kit.logs import JsonFormatter


def test_json_formatter_one_object_per_line() -> None:
    record = logging.LogRecord(
        "worker_kit.service", logging.INFO, __file__, 1, "job %s ended", ("abc",), None
    )
    record.job_id = "abc"
    record.state = "COMPLETED"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "job abc ended" and entry["level"] == "info"
    assert entry["job_id"] == "abc" and entry["state"] == "COMPLETED" and entry["ts"].endswith("Z")
