"""Declared input: the runtime validates every job's input before the handler runs.

A job whose input does not fit ends FAILED with every problem listed, and the handler is
never called. Defaults are filled in (and checked like any other value).

    python examples/validated.py --test-input '{"input": {"text": "hi", "times": 3}}'
    python examples/validated.py --test-input '{"input": {"times": 0, "colour": 1}}'   # FAILED, 3 problems
"""

import worker_kit
from worker_kit import Field

SCHEMA = {
    "text": Field(str, min_length=1, max_length=1000),
    "times": Field(int, default=1, min=1, max=10),
    "separator": Field(str, default=" "),
    "case": Field(str, default="keep", choices=["keep", "upper", "lower"]),
}


@worker_kit.handler(input_schema=SCHEMA)
def repeat(job):
    text = job.input["text"]  # validated: present, a non-empty string
    if job.input["case"] == "upper":
        text = text.upper()
    elif job.input["case"] == "lower":
        text = text.lower()
    return {"result": job.input["separator"].join([text] * job.input["times"])}


if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
