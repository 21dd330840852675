"""JS tasks: one QuickJS context per task, run as greenlets on the asyncio loop.

The call engine uses ``TaskRuntime`` (start/post/terminate/shutdown), ``JsApp`` (an app
directory loaded once) and implements ``CallControl``; see ``boundary.py``.
"""

from .app import AppError, JsApp
from .boundary import CallControl, CallError
from .runtime import Task, TaskRuntime, TaskState

__all__ = ["AppError", "CallControl", "CallError", "JsApp", "Task", "TaskRuntime", "TaskState"]
