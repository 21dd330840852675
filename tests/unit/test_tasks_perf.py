"""Task runtime costs (DESIGN §5: idle task <= 250 KiB RSS, <= 1 ms to create).

Loose bounds only (this is a shared 2-core box); run with ``-s`` to see the figures that
runtime.py's docstring quotes.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

from switch.tasks.runtime import TaskRuntime, TaskState
from test_tasks_support import make_app, run

LIB = """// a small library, as in the seed's lib/call.js
function process() {
  while (IsConnected()) {
    var evt = ReadInput(3600);
    if (IsDisconnectEvent(evt)) {
      Disconnect();
      break;
    }
    if (IsDtmfEvent(evt)) {
      digits.push(evt.digit);
    }
  }
}
var digits = [];
exports.process = process;
exports.digits = function () { return digits.slice(); };
"""

MAIN = """var call = require('lib/call.js');

var config = {
  greeting: 'greeting.wav',
  busy: 'busy.wav',
  maxDigits: 4,
  routes: { '100': 'alice', '200': 'bob', '300': 'carol' },
};

function route(to) {
  var m = /sip:(\\d+)@/.exec(to || '');
  if (!m) return null;
  return config.routes[m[1]] || null;
}

function collect(max, timeout) {
  var got = '';
  while (got.length < max) {
    var evt = ReadInput(timeout);
    if (evt === null || IsDisconnectEvent(evt)) break;
    if (IsDtmfEvent(evt)) got += evt.digit;
  }
  return got;
}

function Main() {
  var who = route(PendingRequestData('To'));
  if (who === null) {
    RejectCall(404, 'Not Found');
    return;
  }
  ProvisionCall();
  AcceptCall();
  PlayFile(config.greeting);
  var digits = collect(config.maxDigits, 5);
  console.log('digits', digits);
  call.process();
}

function idle() {
  var evt = ReadInput();
  return evt;
}

function worker(param) {
  SendEvent(ParentTask(), 'done', param);
}
"""


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_creation_time_and_rss_per_idle_task(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": MAIN, "lib/call.js": LIB})
    assert 45 <= MAIN.count("\n") <= 60

    async def test(rt: TaskRuntime) -> tuple[float, float]:
        warm = [rt.start(app, "idle") for _ in range(20)]  # warm caches and the allocator
        await asyncio.sleep(0.05)
        rt.terminate_all()
        gc.collect()
        rss0 = _rss_kib()
        n = 500
        t0 = time.perf_counter()
        tasks = [rt.start(app, "idle") for _ in range(n)]
        while any(t.state is not TaskState.WAITING_INPUT for t in tasks):
            await asyncio.sleep(0)
        per_task_ms = (time.perf_counter() - t0) / n * 1000
        gc.collect()
        rss_kib = (_rss_kib() - rss0) / n
        assert not any(t.alive for t in warm)
        return per_task_ms, rss_kib

    ms, kib = run(test)
    print(f"\ntask creation {ms:.2f} ms, RSS per idle task {kib:.0f} KiB")
    assert ms < 5
    assert kib < 600


def test_switch_and_event_costs(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": """
function bench() {
  var me = ThisTask(), n = 5000, t0 = Date.now();
  for (var i = 0; i < n; i++) ThisTask();
  var verb = (Date.now() - t0) * 1000 / n;
  t0 = Date.now();
  for (var i = 0; i < n; i++) { SendEvent(me, 'x', i); ReadInput(1); }
  var queued = (Date.now() - t0) * 1000 / n;
  t0 = Date.now();
  for (var i = 0; i < n; i++) ReadInput(1e-9);
  var suspend = (Date.now() - t0) * 1000 / n;
  console.log('=', JSON.stringify([verb, queued, suspend]));
}
"""
        },
    )
    import logging

    got: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    h = Grab()
    logging.getLogger("switch.tasks").addHandler(h)
    prev = logging.getLogger("switch.tasks").level
    logging.getLogger("switch.tasks").setLevel(logging.INFO)
    try:

        async def test(rt: TaskRuntime) -> None:
            rt.start(app, "bench")
            while len(rt):
                await asyncio.sleep(0.001)

        run(test)
    finally:
        logging.getLogger("switch.tasks").removeHandler(h)
        logging.getLogger("switch.tasks").setLevel(prev)
    import json

    verb, queued, suspend = json.loads(got[-1].split("= ", 1)[1])
    print(f"\nverb crossing {verb:.1f} us, SendEvent+ReadInput (queued) {queued:.1f} us, "
          f"ReadInput suspend+timer+resume {suspend:.1f} us")
    assert verb < 50 and queued < 200 and suspend < 300
