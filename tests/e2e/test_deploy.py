"""Apps deployed from git into a running switch (softswitch installapp / apps / route / calls).

Each test makes local git repositories in tmp_path, runs the real switch WITHOUT --app (so
installed apps and routes serve calls) and drives it with the real CLI as a subprocess.
An app's behaviour identifies its version: it rejects every call with the SIP code of its
commit (480 for commit 1, 486 for commit 2, ...), read from lib/version.js, so SIPp sees
which code ran.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from .harness import REPO, SwitchProcess

pytestmark = pytest.mark.e2e

MAIN_JS = """\
var version = require('lib/version.js');
function Main() {
    var ruri = PendingRequestData('Request-URI') || '';
    if (ruri.indexOf('slow') >= 0) {   // ring, then decide 6 s later (an install and a call fit in between,
                                       // even on a loaded machine)
        ProvisionCall();
        ReadInput(6);
    }
    RejectCall(version.code, 'version ' + version.name);
}
"""


def version_js(code: int, name: str) -> str:
    return f"exports.code = {code};\nexports.name = '{name}';\n"


class AppRepo:
    """A git repository the test commits app versions to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
        return subprocess.run(["git", *args], cwd=self.path, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        """Write files, commit; the short SHA (what an operator would paste)."""
        for rel, text in files.items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "--short", "HEAD")



def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[..., SwitchProcess]]:
    """deploy(extra_args=()) -> a started switch with its own control port; every switch of
    a test shares one data dir (so a second one is a restart of the first)."""
    data = tmp_path / "data"
    started: list[SwitchProcess] = []

    def start(extra_args: tuple[str, ...] = ()) -> SwitchProcess:
        control = f"127.0.0.1:{free_tcp_port()}"
        # no --app: installed apps and routes serve every call
        sw = SwitchProcess(None, ["--data-dir", str(data), "--control", control, *extra_args],
                           workdir=tmp_path / f"switch{len(started)}")
        sw.control = control  # type: ignore[attr-defined]
        started.append(sw)
        return sw.start()

    yield start
    for sw in started:
        if sw.returncode is None:
            try:
                sw.stop()
            except AssertionError as e:
                print(e)


def cli(sw: SwitchProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`softswitch ARGS` against sw's control API, as an operator runs it."""
    full_env = {**os.environ, "SOFTSWITCH_CONTROL": sw.control, **(env or {})}  # type: ignore[attr-defined]
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "switch.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def install(sw: SwitchProcess, name: str, repo: AppRepo | str, commit: str) -> subprocess.CompletedProcess[str]:
    url = str(repo.path) if isinstance(repo, AppRepo) else repo
    return cli(sw, "installapp", name, "git", url, commit)


def api(sw: SwitchProcess, path: str) -> dict:
    with urllib.request.urlopen(f"http://{sw.control}{path}", timeout=5) as r:  # type: ignore[attr-defined]
        return json.loads(r.read())


def final(sipp: Callable[..., object], sw: SwitchProcess, service: str = "service") -> int | None:
    res = sipp("uac_expect_final", sw, service=service, timeout=10)
    return res.final_status()  # type: ignore[attr-defined]


def test_install_upgrade_under_a_live_call_routes_rollback_restart(deploy, sipp, sipp_bg, tmp_path):
    x = AppRepo(tmp_path / "repos" / "x")
    x1 = x.commit({"main.js": MAIN_JS, "lib/version.js": version_js(480, "x1")}, "x1")
    x2 = x.commit({"lib/version.js": version_js(486, "x2")}, "x2")
    y = AppRepo(tmp_path / "repos" / "y")  # same file names as x: each app has its own require tree
    y.commit({"main.js": MAIN_JS, "lib/version.js": version_js(603, "y1")}, "y1")

    sw = deploy()
    out = cli(sw, "apps")
    assert out.returncode == 0 and "bundled" in out.stdout, out

    # Install commit 1 as default: new calls run it.
    res = install(sw, "default", x, x1)
    assert res.returncode == 0, res.stderr
    assert "fetching" in res.stdout and "checking" in res.stdout and "live" in res.stdout, res.stdout
    assert final(sipp, sw) == 480

    # A call starts on commit 1 and is still ringing while commit 2 goes live.
    slow = sipp_bg("uac_expect_final", sw, service="slow", timeout=15)
    deadline = time.monotonic() + 5
    while not api(sw, "/calls")["calls"] and time.monotonic() < deadline:
        time.sleep(0.05)
    calls = cli(sw, "calls")
    assert x1 in calls.stdout and "default@" in calls.stdout, calls.stdout
    res = install(sw, "default", x, x2)
    assert res.returncode == 0, res.stderr
    assert final(sipp, sw) == 486  # new calls: commit 2 ...
    apps = {a["name"]: a for a in api(sw, "/apps")["apps"]}
    assert apps["default"]["live_calls"] == 1  # ... while the slow call still runs commit 1
    ring = slow.wait()
    assert ring.received(status=180), ring.describe()
    assert ring.final_status() == 480, ring.describe()

    # Two apps side by side, routed by called number.
    assert install(sw, "y", y, "main").returncode == 0
    res = cli(sw, "route", "add", "2000", "y")
    assert res.returncode == 0 and "2000" in res.stdout, res
    assert final(sipp, sw, "2000") == 603
    assert final(sipp, sw, "1000") == 486

    # Roll back: reinstall commit 1.
    res = install(sw, "default", x, x1)
    assert res.returncode == 0, res.stderr
    assert final(sipp, sw, "1000") == 480

    out = cli(sw, "apps").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert x1 in rows["default"] and "y" in rows, out

    # Restart: apps and routes persist.
    sw.stop()
    sw2 = deploy()
    routes = cli(sw2, "route", "list").stdout
    assert "2000" in routes and "y" in routes, routes
    assert final(sipp, sw2, "2000") == 603
    assert final(sipp, sw2, "1000") == 480


def test_broken_commit_unreachable_repo_and_token(deploy, sipp, tmp_path):
    x = AppRepo(tmp_path / "repos" / "x")
    x1 = x.commit({"main.js": MAIN_JS, "lib/version.js": version_js(480, "x1")}, "x1")
    broken = x.commit({"lib/version.js": "exports.code = 486;\nexports.name = ('x2';\n"}, "broken")
    config = tmp_path / "switch.toml"
    config.write_text('control_token = "s3cret"\n')
    sw = deploy(("--config", str(config)))
    token = {"SOFTSWITCH_TOKEN": "s3cret"}

    # Without the token the switch refuses, readably.
    res = cli(sw, "apps")
    assert res.returncode == 1 and "token" in res.stderr, res

    res = cli(sw, "installapp", "default", "git", str(x.path), x1, env=token)
    assert res.returncode == 0, res.stderr

    # A syntax error: refused, naming the file and line; commit 1 stays live.
    res = cli(sw, "installapp", "default", "git", str(x.path), broken, env=token)
    assert res.returncode == 1, res
    assert "lib/version.js:2" in res.stderr, res.stderr
    assert final(sipp, sw) == 480

    # Unreachable repositories and unknown commits: refused, nothing changes.
    for url, commit in ((str(tmp_path / "nowhere"), "abc1234"), ("http://127.0.0.1:9/app.git", "abc1234"),
                        (str(x.path), "0123456789abcdef")):
        res = cli(sw, "installapp", "default", "git", url, commit, env=token)
        assert res.returncode == 1 and "cannot fetch" in res.stderr, res
    apps = {a["name"]: a for a in json.loads(cli(sw, "apps", "--json", env=token).stdout)}
    assert apps["default"]["requested"] == x1
    assert final(sipp, sw) == 480


def test_hot_swap_under_load_drops_no_call(deploy, sipp_bg, tmp_path):
    """60 calls at 20/s while the app is upgraded and rolled back: every call ends with the
    code of one whole commit (480 or 486), none with an error, and both codes are seen."""
    x = AppRepo(tmp_path / "repos" / "x")
    x1 = x.commit({"main.js": MAIN_JS, "lib/version.js": version_js(480, "x1")}, "x1")
    x2 = x.commit({"lib/version.js": version_js(486, "x2")}, "x2")
    sw = deploy()
    assert install(sw, "default", x, x1).returncode == 0
    load = sipp_bg("uac_expect_final", sw, calls=60, rate=20, timeout=20)
    time.sleep(0.8)
    for commit in (x2, x1, x2):
        res = install(sw, "default", x, commit)
        assert res.returncode == 0, res.stderr
        time.sleep(0.4)
    res = load.wait()
    assert res.ok and res.successful == 60, res.describe()
    codes = [m.status for m in res.received("INVITE") if m.status and m.status >= 200]
    assert len(codes) == 60 and set(codes) == {480, 486}, codes
