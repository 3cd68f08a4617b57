"""How the worker starts, watches and stops a training process.

The worker talks to one small ``Launcher`` interface. ``LocalProcessLauncher`` (the default)
runs ``python -m core train --run-id ...`` as a child process in its own session on this
machine; ``RayJobsLauncher`` (core/runs/ray_launcher.py, registered as ``ray``) runs the
same command as a Ray job. The worker, store and pages stay as they are.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import ConfigError
from core.registry import Registry

if TYPE_CHECKING:
    from core.runs.store import RunRecord

log = logging.getLogger("chestlab.launcher")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAIN_COMMAND: tuple[str, ...] = (
    "{python}", "-m", "core", "train", "--run-id", "{run_id}", "--device", "{device}", "--workspace", "{workspace}",
)  # fmt: skip


@dataclass(frozen=True)
class LaunchState:
    alive: bool
    exit_code: int | None = None
    reason: str = ""  # why it ended, for the run's error text
    pending: bool = False  # alive but waiting in the launcher's queue (not started yet)
    cancelled: bool = False  # ended because it was stopped on purpose (e.g. `ray job stop`)


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # what a config's ``device`` names: "cpu", "cuda:0", "mps"
    kind: str  # "cpu", "cuda", "mps"
    label: str  # for people: "CPU (8 cores)", "NVIDIA A100 80GB"
    total_memory: int | None = None  # bytes
    free_memory: int | None = None


class Launcher(Protocol):
    name: str
    # True when the launcher queues runs itself (Ray): the worker hands it every run it
    # has room for (``default_slots`` per device) and runs wait there as ``queued``.
    queues: bool
    default_slots: int

    def start(self, run: RunRecord, device: str, log_path: Path) -> str:
        """Start the run's training process; returns a reference for poll and cancel."""

    def poll(self, ref: str) -> LaunchState: ...

    def cancel(self, ref: str, grace_s: float) -> None:
        """Ask the process to stop (SIGTERM), force it (SIGKILL) after ``grace_s``. The
        worker calls it from a helper thread while it keeps polling."""

    def devices(self) -> list[DeviceInfo]: ...


LAUNCHERS: Registry[Any] = Registry("launcher")


# -- processes -----------------------------------------------------------------------------

_SIGNAL_HINTS = {
    signal.SIGKILL: "out of memory, or kill -9",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "crashed: segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGBUS: "crashed: bus error",
    signal.SIGINT: "interrupted",
}


def describe_exit(code: int) -> str:
    """``-9`` -> "killed by SIGKILL (out of memory, or kill -9)"; ``3`` -> "exited with status 3"."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    hint = _SIGNAL_HINTS.get(sig)
    return f"killed by {sig.name}" + (f" ({hint})" if hint else "")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc, or None where there is no /proc entry."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[19])


def make_ref(pid: int) -> str:
    # The start time makes the reference survive pid reuse: a new process that got the
    # same pid after ours died does not look like ours.
    stat = _proc_stat(pid)
    return f"{pid}:{stat[1]}" if stat else str(pid)


def ref_pid(ref: str | None) -> int | None:
    """The pid in a local launcher reference, None for other launchers' references."""
    head = (ref or "").split(":", 1)[0]
    return int(head) if head.isdigit() else None


def process_alive(ref: str) -> bool:
    """Whether the process a local reference names still runs (zombies count as ended)."""
    pid = ref_pid(ref)
    if pid is None:
        return False
    parts = ref.split(":")
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        return state not in ("Z", "X") and (len(parts) < 2 or str(start) == parts[1])
    if Path("/proc/self/stat").exists():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session, so the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


# -- the local launcher ----------------------------------------------------------------------


@LAUNCHERS.register("local")
class LocalProcessLauncher:
    """Training processes on this machine, one session each, output appended to the run's
    log file (never a pipe: nobody reads a pipe once the worker restarts, and a full pipe
    blocks the trainer).

    ``command`` is the argv template; ``{python}``, ``{run_id}``, ``{device}``,
    ``{workspace}`` and ``{project}`` are filled in. ``device_names`` fixes the device list
    (skips probing for GPUs).
    """

    name = "local"
    queues = False
    default_slots = 1

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        store_url: str | None = None,
        command: Sequence[str] | None = None,
        device_names: Sequence[str] | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.store_url = store_url
        self.command = tuple(command or TRAIN_COMMAND)
        self.device_names = list(device_names) if device_names else None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(
        cls, workspace: Path, store_url: str, settings: Mapping[str, Any]
    ) -> LocalProcessLauncher:
        """From ``settings.json``: ``local_command`` (argv template), ``devices`` (names)."""
        command = settings.get("local_command")
        devices = settings.get("devices")
        for key, value in (("local_command", command), ("devices", devices)):
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(
                    f"{workspace / 'settings.json'}: {key} must be a list of strings, got {value!r}"
                )
        return cls(workspace, store_url, command=command, device_names=devices)

    def argv(self, run: RunRecord, device: str) -> list[str]:
        values = {
            "python": sys.executable,
            "run_id": run.id,
            "device": device,
            "workspace": str(self.workspace),
            "project": str(PROJECT_ROOT),
        }
        return [part.format(**values) for part in self.command]

    def start(self, run: RunRecord, device: str, log_path: Path) -> str:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHESTLAB_WORKSPACE": str(self.workspace)}
        if self.store_url:
            env["CHESTLAB_STORE_URL"] = self.store_url
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv(run, device)
        with open(log_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"=== {stamp} attempt {run.attempt} on {device}: {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[proc.pid] = proc
        return make_ref(proc.pid)

    def poll(self, ref: str) -> LaunchState:
        pid = ref_pid(ref)
        if pid is None:
            return LaunchState(False, None, f"not a local process reference: {ref!r}")
        proc = self._procs.get(pid)
        if proc is None:
            if process_alive(ref):
                return LaunchState(True)
            return LaunchState(
                False, None, "the process ended; its exit status is unknown (an earlier worker started it)"
            )
        try:
            ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            ended = True  # reaped elsewhere; proc.wait() below still knows the status
        if not ended:
            return LaunchState(True)
        # Not reaped yet, so its pid (and group id) cannot have been reused: this reaches
        # only its own leftovers (e.g. data loader workers).
        _signal_group(pid, signal.SIGKILL)
        code = proc.wait()
        del self._procs[pid]
        return LaunchState(False, code, describe_exit(code))

    def _alive(self, ref: str) -> bool:
        pid = ref_pid(ref)
        proc = self._procs.get(pid) if pid is not None else None
        if proc is not None:
            try:
                return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
            except ChildProcessError:
                return False
        return process_alive(ref)

    def cancel(self, ref: str, grace_s: float) -> None:
        pid = ref_pid(ref)
        if pid is None or not self._alive(ref):
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._alive(ref):
            time.sleep(0.05)
        if self._alive(ref):
            log.warning("pid %d ignored SIGTERM for %.0f s: sending SIGKILL", pid, grace_s)
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self._alive(ref):
                time.sleep(0.05)

    def devices(self) -> list[DeviceInfo]:
        cpu = DeviceInfo("cpu", "cpu", f"CPU ({os.cpu_count() or 1} cores)")
        if self.device_names is not None:
            return [cpu if n == "cpu" else DeviceInfo(n, n.split(":")[0], n) for n in self.device_names]
        return [cpu, *probe_accelerators()]


_PROBE = """
import json, torch
out = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        try:
            free, total = torch.cuda.mem_get_info(i)
        except Exception:
            free, total = None, p.total_memory
        out.append({"name": f"cuda:{i}", "kind": "cuda", "label": p.name, "total_memory": total, "free_memory": free})
mps = getattr(torch.backends, "mps", None)
if mps is not None and mps.is_available():
    out.append({"name": "mps", "kind": "mps", "label": "Apple GPU (MPS)"})
print(json.dumps(out))
"""


def _may_have_accelerators() -> bool:
    # Importing torch to look takes seconds; without a GPU driver there is nothing to find.
    if sys.platform == "darwin":
        return True
    return any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))


def probe_accelerators(timeout_s: float = 120.0) -> list[DeviceInfo]:
    """GPUs with their free memory, asked in a short-lived process: querying free memory
    creates a CUDA context on every GPU, which would otherwise stay held by the caller
    (the app or the worker) for its whole life."""
    if not _may_have_accelerators():
        return []
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, check=True
        ).stdout
        return [DeviceInfo(**d) for d in json.loads(out.strip().splitlines()[-1])]
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log.warning("could not probe for GPUs (%s); using the CPU only", exc)
        return []


# Registers the Ray launcher (it imports ray only when used).
import core.runs.ray_launcher  # noqa: E402, F401
