"""JS tasks: one QuickJS context per task, run as greenlets on a JS worker's loop.

The switch runs tasks through ``WorkerPool`` (``pool.py``: worker processes, placement,
verbs and events over ``wire.py``); inside each worker ``TaskRuntime`` runs them
(start/post/terminate/shutdown, the per-task CPU budget of ``budget.py``). ``JsApp`` is
an app directory loaded once; the call engine implements ``CallControl`` and the
``Switchboard`` (``boundary.py``).
"""

from .app import AppError, JsApp
from .boundary import CallControl, CallError
from .runtime import Task, TaskRuntime, TaskState

__all__ = ["AppError", "CallControl", "CallError", "JsApp", "Task", "TaskRuntime", "TaskState"]
