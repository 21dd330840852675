"""The switch as an operator installs it: from the built wheel, not this checkout.

The wheel is built (`pip wheel --no-deps .`) and installed into a directory of its own
(`pip install --no-deps --target`; the dependencies come from the test's environment);
the switch then runs from there, outside the repository, with the embedded defaults:
no `--app`, so the bundled greeting must be in the wheel, and its JS workers must start
from the installed package too. A file missing from the package fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import REPO, RtpSink, SwitchProcess, run_sipp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy of the tracked files, as a clean clone would: setuptools keeps a
    # build/ directory in the source tree, and a stale one would hide a missing file.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, cwd=wheels)
    [wheel] = wheels.glob("softswitch-*.whl")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def test_the_installed_wheel_answers_with_the_bundled_greeting(installed: Path, tmp_path: Path) -> None:
    sw = SwitchProcess(None, ["--control", "off"], package_dir=installed, workdir=tmp_path / "sw").start()
    try:
        with RtpSink() as sink:
            res = run_sipp("uac_pcmu_wait_bye", sw.sip_target, keys={"rtpport": sink.port}, timeout=20,
                           workdir=tmp_path / "sipp")
            assert res.ok, res.describe()
            assert res.received("BYE"), "the greeting app hangs up when the greeting ends\n" + res.describe()
            packets = [p for p in sink.packets if p.pt == 0]
            assert len(packets) >= 150, f"{len(packets)} PCMU packets of a 3.75 s greeting"
        log = sw.log_text()
        assert "app installed apps" in log and "js worker 0 started" in log, sw.log_tail(20)
    finally:
        sw.stop()
    # the package that served the call is the installed one
    assert (installed / "js_apps" / "greeting" / "main.js").is_file()
    assert (installed / "switch" / "tasks" / "worker.py").is_file()
