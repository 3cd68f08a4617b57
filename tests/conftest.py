"""Fixtures shared by every test: a temporary workspace, paths to the real sample data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CHESTLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
# Tests never download: ImageNet weights are looked up in the hub cache only, in this process
# and in every training process it starts (they inherit the environment).
os.environ.setdefault("CHESTLAB_OFFLINE", "1")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh, empty workspace for this test (``$CHESTLAB_WORKSPACE`` points at it)."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real samples in their original formats); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not present at {SHARED_DATA}")
    return SHARED_DATA


def write_tiny_dataset(root: Path, n_per_class: int = 24, size: int = 48, classes=("normal", "opacity"),
                       seed: int = 0) -> Path:
    """A small imagefolder dataset (train/val/test x classes) of gray PNGs where every
    non-first class has a bright blob at a class-specific place: learnable in seconds."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", n_per_class), ("val", max(4, n_per_class // 3)), ("test", max(4, n_per_class // 3))):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(90, 12, (size, size))
                if ci:
                    cx = size * (0.25 + 0.5 * ((ci - 1) % 2)) + rng.normal(0, 2)
                    cy = size * (0.3 + 0.4 * ((ci - 1) // 2)) + rng.normal(0, 2)
                    img += 90 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 10) ** 2))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{split}_{cls}_{i:03d}.png")
    return root


def write_boxed_dataset(root: Path, n: int = 3, size: int = 64) -> Path:
    """A manifest dataset (``manifest.csv`` + ``boxes.csv``) of gray PNGs, ``n`` per class and
    split, where each 'opacity' image has a bright square and its box."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows, boxes = ["path,label,split"], ["path,x,y,width,height"]
    for split in ("train", "val", "test"):
        for label in ("normal", "opacity"):
            for i in range(n):
                img = rng.normal(90, 10, (size, size + 16))
                name = f"{split}_{label}_{i}.png"
                if label == "opacity":
                    x, y = 10 + 6 * i, 20
                    img[y : y + 16, x : x + 16] += 120
                    boxes.append(f"{name},{x},{y},16,16")
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
                rows.append(f"{name},{label},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "boxes.csv").write_text("\n".join(boxes) + "\n")
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")


# -- real servers for the cluster tests (issue 9): PostgreSQL and a Ray head on loopback ----------
# Plain start/stop functions (bench/launch.py uses them too) and session fixtures over them.


class ServerUnavailable(RuntimeError):
    """A server could not start here; the message says why."""


def unavailable(reason: str):
    """A server the tests need cannot start: fail with the reason in CI (``$CI`` set), skip
    with it elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports. All are held open until every one is chosen:
    asking one at a time may hand back the same just-released port twice."""
    import socket
    from contextlib import ExitStack

    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as ``postgres`` there."""
    import shutil

    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *argv]
    import shlex

    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]


def _pg_bindir() -> Path | None:
    import shutil

    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


class PgServer:
    """A throwaway PostgreSQL server; ``new_database()`` gives each test an empty store."""

    def __init__(self, bindir: Path, data: Path, port: int) -> None:
        self.bindir, self.data, self.port = bindir, data, port
        self._n = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://chestlab@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def ctl(self, *args: str, timeout: float = 120.0):
        import subprocess

        return subprocess.run(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]),
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        import shutil

        self.ctl("stop", "-m", "fast", "-w", "-t", "60")
        shutil.rmtree(self.data, ignore_errors=True)


def start_postgres() -> PgServer:
    """initdb into a temporary folder and start PostgreSQL on a free loopback port (as the
    ``postgres`` user when root). Raises ServerUnavailable with the reason."""
    import shutil
    import subprocess
    import tempfile

    bindir = _pg_bindir()
    if bindir is None:
        raise ServerUnavailable("PostgreSQL is not installed (no pg_ctl): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ServerUnavailable("the PostgreSQL driver is not installed: pip install 'psycopg[binary]'") from None
    data = Path(tempfile.mkdtemp(prefix="chestlab-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
        init = subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "chestlab",
                                               "--no-sync"]), capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-500:]}")
        for _ in range(3):  # a free port can be taken between the probe and the start
            server = PgServer(bindir, data, free_port())
            opts = f"-p {server.port} -k {data} -c listen_addresses=127.0.0.1"
            started = server.ctl("-o", opts, "-l", str(data / "server.log"), "-w", "-t", "90", "start")
            if started.returncode == 0:
                return server
        log = (data / "server.log").read_text(errors="replace")[-800:] if (data / "server.log").exists() else ""
        raise ServerUnavailable(f"PostgreSQL did not start: {started.stderr.strip()[-300:]} {log}")
    except (ServerUnavailable, OSError, LookupError, subprocess.SubprocessError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        if isinstance(exc, ServerUnavailable):
            raise
        raise ServerUnavailable(f"PostgreSQL could not be set up: {exc}") from None


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server (Debian's ``postgresql``) in a temporary folder on a free
    loopback port, for the whole session; stopped and deleted at the end."""
    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """An empty database on the session's PostgreSQL server, dropped after the test."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


class RayHead:
    """A ``ray start --head --block`` of our own: its dashboard ``address``, its process."""

    def __init__(self, address: str, proc, temp_dir: Path, log: Path) -> None:
        self.address, self.proc, self.temp_dir, self.log = address, proc, temp_dir, log

    def stop(self) -> None:
        """Stop what this ``ray start`` started (never ``ray stop``: it would stop every Ray
        on the machine): live jobs first, then the head."""
        import shutil
        import signal
        import subprocess

        from core.runs.ray_launcher import RayDashboard

        try:
            from ray.job_submission import JobSubmissionClient

            client = JobSubmissionClient(self.address)
            for job in RayDashboard(self.address).jobs():
                if job.get("status") in ("PENDING", "RUNNING"):
                    client.stop_job(job["submission_id"])
        except Exception:  # the head may be gone already
            pass
        # SIGTERM to `ray start --block` itself: it drains the node and stops its processes
        # in order (signalling the whole group instead leaves the GCS waiting for its peers).
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group is left
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class _PortClash(ServerUnavailable):
    """The head could not start because one of its ports was taken."""


def start_ray_head(num_cpus: int = 2, timeout_s: float = 180.0, attempts: int = 3) -> RayHead:
    """A local Ray head on loopback: free ports, its own temp dir, usage stats off, jobs on
    this environment's Python. Raises ServerUnavailable with the reason.

    Ray picks some of its ports at random; one of them can land on a port chosen here (CI
    saw the GCS take the dashboard's). A start that fails on a port clash is retried with
    fresh ports; any other failure is reported at once."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_ray_head_once(num_cpus, timeout_s)
        except _PortClash as exc:
            if attempt == attempts:
                raise ServerUnavailable(f"{exc} (port clash on all {attempts} attempts)") from None
    raise AssertionError("unreachable")


def _start_ray_head_once(num_cpus: int, timeout_s: float) -> RayHead:
    import importlib.util
    import subprocess
    import sys
    import tempfile
    import time

    ray_bin = Path(sys.executable).with_name("ray")
    if importlib.util.find_spec("ray") is None or not ray_bin.exists():
        raise ServerUnavailable("Ray is not installed: pip install 'ray[default]'")
    from core.errors import ConfigError
    from core.runs.ray_launcher import RayDashboard

    temp_dir = Path(tempfile.mkdtemp(prefix="chestlab-ray-", dir="/tmp"))  # short: Ray's socket paths
    log = temp_dir / "head.log"
    gcs_port, dash_port, client_port, agent_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHESTLAB_")}
    # Jobs run `python`: the head's PATH must lead to this environment's interpreter.
    env.update(PATH=f"{ray_bin.parent}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    argv = [str(ray_bin), "start", "--head", "--block", "--disable-usage-stats", "--num-cpus", str(num_cpus),
            "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port), "--dashboard-host",
            "127.0.0.1", "--dashboard-port", str(dash_port), "--ray-client-server-port", str(client_port),
            "--dashboard-agent-listen-port", str(agent_port), "--temp-dir", str(temp_dir)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=temp_dir)
    head = RayHead(f"http://127.0.0.1:{dash_port}", proc, temp_dir, log)
    dash = RayDashboard(head.address, timeout_s=2.0)
    deadline = time.monotonic() + timeout_s  # ~12 s on an idle machine; far longer on a loaded one
    while True:
        reason = ""
        if proc.poll() is not None:
            reason = f"the Ray head exited with status {proc.returncode}"
        elif time.monotonic() > deadline:
            reason = f"the Ray head did not answer within {timeout_s:.0f} s"
        if reason:
            tail = log.read_text(errors="replace")[-800:]
            head.stop()
            clash = "is used by other components" in tail or "address already in use" in tail.lower()
            raise (_PortClash if clash else ServerUnavailable)(f"{reason}: {tail}")
        try:
            if any(n.get("state") == "ALIVE" for n in dash.nodes()):
                dash.jobs()
                return head
        except (ConfigError, LookupError, KeyError):
            pass
        time.sleep(0.5)


@pytest.fixture(scope="session")
def ray_head():
    """A real local Ray head (``ray start --head`` on loopback, free ports, 2 CPUs, its own
    temp dir) shared by the session; stopped at the end."""
    try:
        head = start_ray_head()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    yield head
    head.stop()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The full demo dataset (1,000 images), written once per session."""
    from core.data.demo import write_demo

    return Path(write_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0).root)


@pytest.fixture(scope="session")
def trained_demo_run(tmp_path_factory, demo_root):
    """A ResNet-18 trained from scratch at 224 px on the demo dataset, through the store
    like any run: ``(workspace, run_id, result)``. Shared by the slow tests."""
    from core.config import RunConfig
    from core.runs.execute import execute_run, start_here
    from core.runs.store import RunStore

    ws = tmp_path_factory.mktemp("trained") / "workspace"
    config = RunConfig(data=str(demo_root), arch="resnet18", loss="weighted_ce", epochs=8, img_size=224, batch_size=32,
                       lr=1e-3, schedule="onecycle", device="cpu", seed=0, name="demo-resnet18",
                       pretrained="none")
    store = RunStore(workspace=ws)
    rec = start_here(store, config)
    result = execute_run(store, rec, workspace=ws)
    return ws, rec.id, result
