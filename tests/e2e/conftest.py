"""Fixtures for the end-to-end suite: one switch per test on free ports, an RTP sink,
SIPp runs whose files land in the test's tmp dir, and the switch log printed on failure."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import pytest

from .certs import Pki, make_pki
from .harness import (
    RtpSink,
    SippResult,
    SippRun,
    SwitchProcess,
    prepare_app,
    run_sipp,
    switch_available,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _needs_switch(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("e2e") and not switch_available():
        pytest.skip("switch/cli.py does not exist yet")


@pytest.fixture
def app_dir(tmp_path: Path) -> Callable[[str], Path]:
    """app_dir("greeting") -> a tmp copy of tests/e2e/apps/greeting or js_apps/greeting,
    with greeting.wav, tone.wav (1 s) and short.wav (0.5 s) next to main.js."""
    root = tmp_path / "apps"
    root.mkdir(exist_ok=True)
    return lambda name: prepare_app(name, root)


@pytest.fixture
def switch_factory(
    request: pytest.FixtureRequest, tmp_path: Path, app_dir: Callable[[str], Path]
) -> Iterator[Callable[..., SwitchProcess]]:
    """switch_factory("greeting", extra_args=()) -> a started SwitchProcess (app None: the
    installed apps instead of --app; ready: it
    answered OPTIONS). At teardown each is stopped with SIGTERM and must exit 0 in 10 s."""
    started: list[SwitchProcess] = []

    def make(app: str | Path | None, extra_args: Sequence[str] = (), **kw: object) -> SwitchProcess:
        # None: no --app, the installed apps (and routes) serve the calls
        d = None if app is None else Path(app) if Path(app).is_dir() else app_dir(str(app))
        sw = SwitchProcess(d, extra_args, workdir=tmp_path / f"switch{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(sw)
        return sw.start()

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    errors = []
    for sw in started:
        if sw.returncode is not None:
            continue
        try:
            sw.stop()
        except AssertionError as e:
            errors.append(str(e))
    if failed:
        for sw in started:
            print(sw.log_tail(80))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def switch(switch_factory: Callable[..., SwitchProcess]) -> Callable[..., SwitchProcess]:
    return switch_factory


@pytest.fixture
def rtp_sink() -> Iterator[RtpSink]:
    sink = RtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Callable[..., SippResult]:
    """sipp(scenario, switch, **run_sipp kwargs) -> SippResult, files in tmp_path/sipp."""

    def run(scenario: str, sw: SwitchProcess | str, **kw: object) -> SippResult:
        target = sw.sip_target if isinstance(sw, SwitchProcess) else sw
        kw.setdefault("workdir", tmp_path / "sipp")
        return run_sipp(scenario, target, **kw)  # type: ignore[arg-type]

    return run


@pytest.fixture
def sipp_bg(tmp_path: Path) -> Iterator[Callable[..., SippRun]]:
    """Like sipp, but returns the running SippRun (call .wait() for the result)."""
    runs: list[SippRun] = []

    def start(scenario: str, sw: SwitchProcess | str, **kw: object) -> SippRun:
        target = sw.sip_target if isinstance(sw, SwitchProcess) else sw
        kw.setdefault("workdir", tmp_path / "sipp")
        r = SippRun(scenario, target, **kw)  # type: ignore[arg-type]
        runs.append(r)
        return r

    yield start
    for r in runs:
        if r.running():
            r.wait(timeout=1)


@pytest.fixture
def bridge_app(app_dir: Callable[[str], Path]) -> Callable[..., Path]:
    """bridge_app(timeout_s=None) -> a copy of js_apps/bridge; with timeout_s, the egress
    waits that long instead of the seed's 60 s (the only change: `ReadInput(60)`)."""

    def make(timeout_s: int | None = None) -> Path:
        d = app_dir("bridge")
        if timeout_s is not None:
            main = d / "main.js"
            src = main.read_text()
            assert "ReadInput(60)" in src, src
            main.write_text(src.replace("ReadInput(60)", f"ReadInput({timeout_s})"))
        return d

    return make


@pytest.fixture
def callee_sink() -> Iterator[RtpSink]:
    sink = RtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a certificate it signs for 127.0.0.1/localhost, a self-signed rogue (certs.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))

