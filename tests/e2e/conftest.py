"""A real Streamlit server and a real browser (Debian's chromium driven by Playwright).

The server runs ``streamlit run app.py`` headless on a free loopback port with its own
workspace; the browser is never downloaded (``executable_path``). Where either cannot start,
the tests fail with the reason in CI and skip with it elsewhere (``tests/conftest.py``).

Waiting is done on Streamlit's own signals: the health endpoint, the app container, and the
``data-test-script-state`` attribute of ``stApp`` (``running`` while a script or fragment
runs, ``notRunning`` once it is done), never on fixed sleeps.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, unavailable

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_S = 60


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@dataclass
class Server:
    """``streamlit run app.py`` on a workspace; restartable (same workspace, new process)."""

    workspace: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "CHESTLAB_WORKSPACE": str(self.workspace)}
        cmd = [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true", "--server.address", "127.0.0.1",
            "--server.port", str(self.port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        log.write(f"\n=== starting on port {self.port}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {self.url} in {SERVER_START_S} s; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("failed-*.png"):  # from an earlier session
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="module")
def server(tmp_path_factory, artifacts) -> Iterator[Server]:
    """A fresh workspace and a server on it. Pretrained weights are looked up in an empty
    torch hub cache, so the journey never depends on (or downloads into) this machine's."""
    root = tmp_path_factory.mktemp("e2e")
    workspace = root / "workspace"
    workspace.mkdir()
    srv = Server(workspace, artifacts / "server.log")
    srv.log_path.unlink(missing_ok=True)
    srv.env = {"TORCH_HOME": str(root / "torch-home"), "CI": os.environ.get("CI", "")}
    try:
        srv.start()
    except (RuntimeError, OSError) as exc:
        unavailable(f"the Streamlit server could not start: {exc}")
    try:
        yield srv
    finally:
        srv.stop()
        _stop_runs(workspace)


def _stop_runs(workspace: Path) -> None:
    """Leave nothing behind: the workspace's worker and any training process still going."""
    from core.runs.store import RunStatus, RunStore
    from core.runs.worker import stop_worker

    stop_worker(workspace)
    store = RunStore(workspace=workspace)
    for run in store.list_runs():
        if run.status is RunStatus.RUNNING and run.pid:
            try:
                os.killpg(run.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(run.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    exe = chromium_path()
    if exe is None:
        unavailable("chromium is not installed (apt-get install chromium; .ci/run does it in CI)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"playwright is not installed: {exc}")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 (any launch failure is the reason to report)
            unavailable(f"chromium at {exe} did not start: {exc}")
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed_call = True


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, artifacts):
    """A failed step leaves a screenshot of what the browser showed (``failed-<test>.png``)."""
    yield
    if getattr(request.node, "failed_call", False) and "journey" in request.fixturenames:
        page = request.getfixturevalue("journey").page
        try:
            page.screenshot(path=str(artifacts / f"failed-{request.node.name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 (the page may be gone; the failure itself is reported)
            pass
