"""AppStore: install/remove/routes, persistence and atomicity (switch/apps/store.py), with a
fake fetch; and the real git fetch against local repositories (switch/apps/git.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from switch.apps.git import FetchError, GitMirror
from switch.apps.routing import Route
from switch.apps.store import KEEP_VERSIONS, AppStore, DeployError, write_json_atomic
from switch.tasks.app import AppError, JsApp


class FakeFetch:
    """Commits are dicts of files; fetching one writes DATA/apps/NAME/SHA like git.py does."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.commits: dict[str, dict[str, str]] = {}
        self.calls = 0
        self.delay = 0.0

    def add(self, sha: str, files: dict[str, str]) -> str:
        self.commits[sha.ljust(40, "0")] = files
        return sha

    async def __call__(self, name: str, url: str, commit: str) -> tuple[str, Path]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        full = [s for s in self.commits if s.startswith(commit)]
        if url == "bad" or len(full) != 1:
            raise FetchError(f"no commit {commit} in {url}")
        dest = self.data / "apps" / name / full[0]
        if not dest.exists():
            for rel, text in self.commits[full[0]].items():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_text(text)
        return full[0], dest


def reject(code: int) -> dict[str, str]:
    return {"main.js": "var v = require('lib/v.js');\nfunction Main() { RejectCall(v.code); }\n",
            "lib/v.js": f"exports.code = {code};\n"}


@pytest.fixture
def env(tmp_path: Path) -> tuple[AppStore, FakeFetch]:
    fetch = FakeFetch(tmp_path)
    fallback = JsApp.from_sources("default", {"main.js": "function Main() {}"}, "bundled")
    return AppStore(tmp_path, fallback=fallback, fetch=fetch), fetch


def code_of(app: JsApp) -> str:
    return app.files["lib/v.js"].text


def test_install_swaps_persists_and_reloads(env: tuple[AppStore, FakeFetch], tmp_path: Path) -> None:
    store, fetch = env
    fetch.add("aaaa", reject(480))
    fetch.add("bbbb", reject(486))
    assert store.app_for("123", "h").version == "bundled"  # nothing installed: the fallback
    rec = asyncio.run(store.install("default", "repo", "aaaa"))
    assert rec["commit"].startswith("aaaa") and rec["requested"] == "aaaa" and rec["previous"] is None
    assert set(rec["timings_ms"]) == {"fetch", "check", "persist", "total"}
    first = store.app_for("123", "h")
    assert "480" in code_of(first)
    rec = asyncio.run(store.install("default", "repo", "bbbb"))
    assert rec["previous"].startswith("aaaa")
    assert "486" in code_of(store.app_for("123", "h"))
    assert "480" in code_of(first)  # a call holding the old JsApp keeps its code
    asyncio.run(store.set_routes([{"match": "2000", "app": "default"}]))

    again = AppStore(tmp_path, fetch=fetch)
    again.load()
    assert again.apps["default"].commit.startswith("bbbb")
    assert "486" in code_of(again.app_for("9", "h"))
    assert [r.match for r in again.routes.api_routes] == ["2000"]


def test_a_failed_fetch_or_check_changes_nothing(env: tuple[AppStore, FakeFetch], tmp_path: Path) -> None:
    store, fetch = env
    fetch.add("aaaa", reject(480))
    fetch.add("cccc", {"main.js": "function Main() {}\n", "lib/x.js": "var ok = 1;\nvar = ;\n"})
    fetch.add("dddd", {"lib/x.js": "exports.a = 1;\n"})
    asyncio.run(store.install("default", "repo", "aaaa"))
    before = (tmp_path / "apps.json").read_text()
    with pytest.raises(DeployError) as e:
        asyncio.run(store.install("default", "repo", "cccc"))
    assert e.value.status == 422 and "lib/x.js:2" in str(e.value)
    with pytest.raises(DeployError, match="no main.js") as e:
        asyncio.run(store.install("default", "repo", "dddd"))
    with pytest.raises(DeployError, match="cannot fetch") as e:
        asyncio.run(store.install("default", "bad", "aaaa"))
    assert e.value.status == 502
    assert (tmp_path / "apps.json").read_text() == before
    assert store.apps["default"].commit.startswith("aaaa")


def test_a_crash_before_the_state_file_is_replaced_leaves_the_old_version(
    env: tuple[AppStore, FakeFetch], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fetch = env
    fetch.add("aaaa", reject(480))
    fetch.add("bbbb", reject(486))
    asyncio.run(store.install("default", "repo", "aaaa"))

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        asyncio.run(store.install("default", "repo", "bbbb"))
    monkeypatch.undo()
    assert store.apps["default"].commit.startswith("aaaa")  # the swap happens only after persisting
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".apps.json")]  # temp file cleaned
    restarted = AppStore(tmp_path, fetch=fetch)
    restarted.load()
    assert restarted.apps["default"].commit.startswith("aaaa")


def test_concurrent_installs_of_one_app_are_serialized(env: tuple[AppStore, FakeFetch]) -> None:
    store, fetch = env
    fetch.add("aaaa", reject(480))
    fetch.add("bbbb", reject(486))
    fetch.delay = 0.05
    order: list[str] = []

    async def both() -> None:
        async def one(c: str) -> None:
            rec = await store.install("default", "repo", c)
            order.append(rec["commit"][:4])

        await asyncio.gather(one("aaaa"), one("bbbb"))

    asyncio.run(both())
    assert order == ["aaaa", "bbbb"]
    assert store.apps["default"].commit.startswith("bbbb")  # the last one to finish is live
    assert store.apps["default"].previous.startswith("aaaa")


def test_routes_pick_the_app_and_unknown_apps_fail_the_call(env: tuple[AppStore, FakeFetch]) -> None:
    store, fetch = env
    fetch.add("aaaa", reject(480))
    fetch.add("bbbb", reject(603))
    asyncio.run(store.install("default", "repo", "aaaa"))
    asyncio.run(store.install("sales", "repo2", "bbbb"))
    asyncio.run(store.add_route({"match": "2*", "app": "sales"}))
    asyncio.run(store.add_route({"match": "3*", "app": "nosuch"}))
    assert store.app_for("2000", "h").name == "sales"
    assert store.app_for("1000", "h").name == "default"
    with pytest.raises(AppError, match="'nosuch', which is not installed"):
        store.app_for("3000", "h")
    with pytest.raises(DeployError, match="still send calls") as e:
        asyncio.run(store.remove("sales"))
    assert e.value.status == 409
    asyncio.run(store.remove_route(0))
    asyncio.run(store.remove("sales"))
    assert "sales" not in store.apps
    with pytest.raises(DeployError) as e:
        asyncio.run(store.remove_route(5))
    assert e.value.status == 404


def test_config_routes_come_after_api_routes_and_cannot_be_removed(tmp_path: Path) -> None:
    store = AppStore(tmp_path, config_routes=[Route("1800*", "tollfree")], fetch=FakeFetch(tmp_path))
    rules = asyncio.run(store.add_route({"match": "18001234", "app": "special"}))
    assert [(r["match"], r["origin"]) for r in rules] == [("18001234", "api"), ("1800*", "config")]
    with pytest.raises(DeployError, match="config file") as e:
        asyncio.run(store.remove_route(1))
    assert e.value.status == 409
    state = json.loads((tmp_path / "apps.json").read_text())
    assert state["routes"] == [{"match": "18001234", "app": "special"}]  # config rules are not copied


def test_old_versions_are_pruned_unless_a_call_uses_them(tmp_path: Path) -> None:
    fetch = FakeFetch(tmp_path)
    in_use: set[Path] = set()
    store = AppStore(tmp_path, fetch=fetch, in_use=lambda: in_use)
    shas = [fetch.add(c * 4, reject(400 + i)) for i, c in enumerate("abcdef")]
    first = asyncio.run(store.install("default", "repo", shas[0]))
    in_use.add(tmp_path / "apps" / "default" / first["commit"])  # a long call on the first commit
    os.utime(tmp_path / "apps" / "default" / first["commit"], (1000, 1000))
    for i, sha in enumerate(shas[1:], 1):
        asyncio.run(store.install("default", "repo", sha))
        os.utime(tmp_path / "apps" / "default" / store.apps["default"].commit, (1000 + i, 1000 + i))
    left = sorted(p.name[:4] for p in (tmp_path / "apps" / "default").iterdir())
    assert len(left) == KEEP_VERSIONS + 1 and "aaaa" in left and "ffff" in left  # kept + the one in use
    in_use.clear()
    store.prune("default")
    assert len(list((tmp_path / "apps" / "default").iterdir())) == KEEP_VERSIONS


def test_write_json_atomic_replaces_whole_files(tmp_path: Path) -> None:
    p = tmp_path / "s" / "apps.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2}
    assert [x.name for x in p.parent.iterdir()] == ["apps.json"]


# --------------------------------------------------------------------------- real git


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_git_mirror_resolves_short_shas_tags_and_exports_trees(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "main.js").write_text("function Main() {}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "1")
    git(repo, "tag", "v1")
    one = git(repo, "rev-parse", "HEAD")
    (repo / "main.js").write_text("function Main() { RejectCall(486); }\n")
    git(repo, "commit", "-qam", "2")
    two = git(repo, "rev-parse", "HEAD")

    async def go() -> None:
        mirror = GitMirror(tmp_path / "data", f"file://{repo}", asyncio.Lock())
        assert await mirror.resolve(two[:7]) == two
        assert await mirror.resolve("v1") == one
        dest = tmp_path / "data" / "apps" / "x" / one
        assert await mirror.export(one, dest) is True
        assert (dest / "main.js").read_text() == "function Main() {}\n"
        assert await mirror.export(one, dest) is False  # immutable: reused
        with pytest.raises(FetchError, match="not in"):
            await mirror.resolve("0123456789abcdef0123456789abcdef01234567")
        with pytest.raises(FetchError, match="bad commit"):
            await mirror.resolve("--upload-pack=touch /tmp/pwned")
        with pytest.raises(FetchError):
            await GitMirror(tmp_path / "data", str(tmp_path / "nowhere"), asyncio.Lock()).resolve("abc1234")

    asyncio.run(go())
