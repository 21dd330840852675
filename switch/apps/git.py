"""Fetch one commit of a git repository and export its tree, with the git CLI.

Every git command runs through ``asyncio.create_subprocess_exec`` (the loop never blocks),
with a timeout, ``GIT_TERMINAL_PROMPT=0`` (a URL needing a password fails instead of
waiting on a prompt nobody sees) and its stderr kept for the error message.

Layout under the data dir::

    git/<sha1 of the URL>.git     a bare mirror per repository URL (shared by apps)
    apps/<name>/<full sha>/       the exported tree of one commit: immutable

Why a mirror: a reinstall (rollback) of a commit already fetched needs no network, and a
later fetch only transfers new objects. Why the tree is exported, not checked out in
place: a directory per commit never changes once renamed into place, so a call that
started on it can keep playing its files while newer commits go live.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger("switch.apps")

FETCH_TIMEOUT = 60.0  # seconds for one network fetch
LOCAL_TIMEOUT = 20.0  # seconds for a local git command (rev-parse, archive)
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")


class FetchError(Exception):
    """The repository or the commit cannot be fetched; the message includes git's stderr."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait on a credentials prompt
    env["GIT_ASKPASS"] = "true"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
    env["LC_ALL"] = "C"  # stable English messages in errors
    return env


async def run_git(*args: str, git_dir: Path | None = None, timeout: float = LOCAL_TIMEOUT) -> bytes:
    """Run ``git ARGS``; its stdout, or FetchError with its stderr."""
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(), start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise FetchError(f"git {args[0]} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise FetchError(_git_message(err) or f"git {args[0]} exited with {proc.returncode}")
    return out


def _git_message(stderr: bytes) -> str:
    """git's reason, without its advice: the first 'fatal:'/'error:' line, else all of it."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    for ln in lines:
        for prefix in ("fatal: ", "error: "):
            if ln.startswith(prefix):
                return ln[len(prefix):]
    return " ".join(lines)


def check_source(url: str, commit: str) -> None:
    """Refuse what git could take for an option (``-u...``), or an empty value."""
    if not url or url.startswith("-") or any(c in url for c in "\n\r\0"):
        raise FetchError(f"bad repository URL {url!r}")
    if not commit or commit.startswith("-") or not re.fullmatch(r"[\w./^~@{}-]+", commit):
        raise FetchError(f"bad commit {commit!r}: give a SHA (short is fine), a tag or a branch")


def mirror_path(data_dir: Path, url: str) -> Path:
    return data_dir / "git" / (hashlib.sha1(url.encode()).hexdigest() + ".git")


class GitMirror:
    """The bare mirror of one repository URL."""

    def __init__(self, data_dir: Path, url: str, lock: asyncio.Lock) -> None:
        self.url = url
        self.path = mirror_path(data_dir, url)
        # One git process at a time per mirror (the caller keeps one lock per path):
        # concurrent fetches into one repository fight over its ref locks.
        self.lock = lock

    async def resolve(self, commit: str) -> str:
        """COMMIT (full or short SHA, tag, branch) -> full SHA, fetching when needed."""
        check_source(self.url, commit)
        async with self.lock:
            if not (self.path / "HEAD").exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".init-", dir=self.path.parent))
                await run_git("init", "--quiet", "--bare", str(tmp))
                await run_git("config", "remote.origin.url", self.url, git_dir=tmp)
                os.replace(tmp, self.path)
            # A SHA already in the mirror is immutable: no network needed (fast rollback,
            # and installs of known commits work while the git server is down).
            if _HEX.match(commit):
                sha = await self._rev_parse(commit)
                if sha is not None:
                    return sha
            await run_git("fetch", "--quiet", "--force", "--prune", "--", self.url,
                          "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
                          git_dir=self.path, timeout=FETCH_TIMEOUT)  # fmt: skip
            sha = await self._rev_parse(commit)
            if sha is None and _HEX.match(commit) and len(commit) == 40:
                # Not on any branch or tag: servers with uploadpack.allowAnySHA1InWant
                # hand out a commit by its SHA.
                try:
                    await run_git("fetch", "--quiet", "--", self.url, commit, git_dir=self.path,
                                  timeout=FETCH_TIMEOUT)
                except FetchError:
                    pass
                sha = await self._rev_parse(commit)
            if sha is None:
                raise FetchError(f"commit {commit!r} is not in {self.url} (not on any branch or tag)")
            return sha

    async def _rev_parse(self, commit: str) -> str | None:
        try:
            out = await run_git("rev-parse", "--quiet", "--verify", "--end-of-options", commit + "^{commit}",
                                git_dir=self.path)
        except FetchError:
            return None
        return out.decode().strip() or None

    async def export(self, sha: str, dest: Path) -> bool:
        """Write the tree of ``sha`` to ``dest`` (atomically: temp dir + rename).

        False when ``dest`` already exists (the commit was exported before; the tree of a
        commit never changes, so it is reused as is)."""
        if dest.is_dir():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        async with self.lock:
            tar = await run_git("archive", "--format=tar", sha, git_dir=self.path)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        try:
            await asyncio.to_thread(_extract, tar, tmp)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True


def _extract(tar: bytes, into: Path) -> None:
    """Untar (the 'data' filter refuses absolute paths, links out of the tree, devices) and
    fsync every file, so the directory is complete on disk before it is renamed into place."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(into, filter="data")
    for dirpath, _dirs, files in os.walk(into):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(dirpath, 0o755)  # mkdtemp makes 0700
