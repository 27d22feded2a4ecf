# An Ansible callback plugin (loaded by ansible-playbook, never imported by aios_lib): one JSON line
# per task result and host into the file $SYNAPSE_EVENTS, as it happens. The fleet record reads
# these lines (aios_lib.fleet.playbook.host_outcomes) to say how each host's steps ended.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: synapse_events
    type: notification
    short_description: task results as JSON lines for Synapse's fleet record
    description: writes one JSON line per task result and host to the file named by SYNAPSE_EVENTS
"""

TAIL = 4000


def _tail(text) -> str:
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    return text if len(text) <= TAIL else "..." + text[-TAIL:]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "synapse_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("SYNAPSE_EVENTS")
        self._started: dict[tuple[str, str], float] = {}

    def _write(self, event: dict) -> None:
        if not self._path:
            return
        event["time"] = time.time()
        with open(self._path, "a") as f:
            f.write(json.dumps(event, default=str) + "\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start = time.time()

    def _result(self, status: str, result) -> None:
        r = result._result or {}
        host = result._host.get_name()
        task = result._task.get_name()
        self._write({"host": host, "task": task, "status": status, "rc": r.get("rc"),
                     "changed": bool(r.get("changed")), "cmd": r.get("cmd"),
                     "msg": _tail(r.get("msg")), "stdout": _tail(r.get("stdout")), "stderr": _tail(r.get("stderr")),
                     "start": r.get("start"), "end": r.get("end"), "delta": r.get("delta"),
                     "ignored": bool(getattr(result, "_task_fields", {}).get("ignore_errors"))})

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)
