"""Launch and store speed beyond one machine (issue 9, "Speed").

Starts, in one process, a throwaway PostgreSQL server and a local Ray head (as the tests do,
on free loopback ports), then times:

- submit-to-running and cancel-to-cancelled of real runs (``python -m core train`` on the demo
  data at 96 px) through the local launcher and the Ray launcher, each after one untimed
  warm-up run (imports loaded; the head has the project's code and a worker process ready);
  both report to the PostgreSQL store;
- how long a metric row written by a training process takes to reach the store as the
  Compare page reads it (``store.metrics(after_id=...)``), for those runs;
- metric-row write throughput on SQLite and PostgreSQL: 4 writer processes x ``--rows`` rows
  in batches of 50.

    python bench/launch.py [--repeats 3] [--rows 5000] [--skip-ray]

Targets: Ray submit-to-running <= 5 s on a warm head; a metric reaches the store within 2 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"ray_submit_to_running_s": 5.0, "metric_to_store_s": 2.0}


def _config(data: str, seed: int) -> dict[str, Any]:
    return {"data": data, "arch": "resnet18", "img_size": 96, "epochs": 500, "batch_size": 16, "device": "cpu",
            "augment": "none", "schedule": "none", "seed": seed, "name": f"bench-{seed}", "pretrained": "none"}  # fmt: skip


def _worker(workspace: Path, store: Any) -> tuple[Any, threading.Event, threading.Thread]:
    from core.runs.worker import Worker

    worker = Worker(workspace, store=store, poll_s=0.2, idle_exit_s=3600)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return worker, stop, thread


def _until(cond, timeout_s: float, what: str, tick=None) -> float:
    """Seconds until ``cond()``; ``tick()`` runs between looks."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        if tick:
            tick()
        time.sleep(0.02)
    return time.monotonic() - t0


class MetricWatch:
    """What the Compare page does: read the rows written since the last read; here as often
    as every 20 ms, recording when each row became readable."""

    def __init__(self, store: Any, run_id: str) -> None:
        self.store, self.run_id, self.last, self.delays = store, run_id, 0, []
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.02
        df, self.last = self.store.metrics(self.run_id, after_id=self.last)
        seen = time.time()
        self.delays += [seen - t for t in df["time"]]


def _one_run(
    kind: str, i: int, worker: Any, workspace: Path, store: Any, data: str
) -> tuple[float, float, str, list[float]]:
    """Submit a run, wait until it shows running and trains, cancel it: (submit->running,
    cancel->finished, its final status, metric delays)."""
    from core.runs.store import RunStatus
    from core.runs.submit import cancel_run, submit_run

    # The previous run's process must have exited: the local launcher has one CPU slot, and
    # the time a slot takes to free is not launch time.
    _until(lambda: not worker.children, 120, "the previous run's process to exit")
    t_submit = time.monotonic()
    run_id = submit_run(_config(data, i), workspace, start_worker=False).id
    watch = MetricWatch(store, run_id)
    _until(lambda: store.get_run(run_id).status is RunStatus.RUNNING, 600, f"{kind} run {i} running")
    to_running = time.monotonic() - t_submit
    # Cancel once the trainer is in its loop and has written a few rows, as a user would.
    _until(lambda: len(watch.delays) >= 3, 600, f"{kind} run {i} training", tick=watch)
    t_cancel = time.monotonic()
    cancel_run(run_id, workspace, store=store)
    _until(lambda: store.get_run(run_id).status.finished, 60, f"{kind} run {i} cancelled", tick=watch)
    return to_running, time.monotonic() - t_cancel, store.get_run(run_id).status.value, watch.delays


def time_launcher(
    kind: str, workspace: Path, store: Any, data: str, repeats: int, warmup: bool
) -> dict[str, Any]:
    from core.runs.cluster import cluster_status

    worker, stop, thread = _worker(workspace, store)
    out: dict[str, Any] = {"submit_to_running_s": [], "cancel_to_cancelled_s": [], "metric_delays_s": []}
    try:
        for i in range(repeats + int(warmup)):
            to_running, to_cancelled, status, delays = _one_run(kind, i, worker, workspace, store, data)
            label = "warm-up" if warmup and i == 0 else f"run {i + 1 - int(warmup)}"
            print(
                f"  {kind:5s} {label:8s} submit->running {to_running:6.2f} s   cancel->{status} {to_cancelled:5.2f} s"
            )
            if kind == "ray" and i == 0:
                out["cluster_status"] = {k: cluster_status(workspace)[k] for k in ("cpus", "nodes")}
            if warmup and i == 0:
                continue
            out["submit_to_running_s"].append(to_running)
            out["cancel_to_cancelled_s"].append(to_cancelled)
            out["metric_delays_s"] += delays
    finally:
        stop.set()
        thread.join(15)
        for child in list(worker.children.values()):
            worker.launcher.cancel(child.ref, 2.0)
    return out


def _write(url: str, run_id: str, n: int, batch: int, barrier: Any, q: Any) -> None:
    sys.path.insert(0, str(ROOT))
    from core.runs.store import RunStore
    from core.train.reporter import MetricRow

    store = RunStore(url=url)
    barrier.wait()
    t0 = time.time()
    for first in range(0, n, batch):
        store.add_metrics(
            run_id,
            [MetricRow(i // 100, i, "train", "loss", 1.0 / (i + 1)) for i in range(first, first + batch)],
        )
    q.put((t0, time.time()))


def throughput(url: str, rows: int, writers: int = 4, batch: int = 50) -> float:
    from core.runs.store import RunStore

    store = RunStore(url=url)
    runs = [store.create_run({"arch": "resnet18"}).id for _ in range(writers)]
    ctx = multiprocessing.get_context("spawn")
    barrier, q = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_write, args=(url, rid, rows, batch, barrier, q)) for rid in runs]
    for p in procs:
        p.start()
    spans = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    assert sum(store.count_metrics(r) for r in runs) == writers * rows, "rows were lost"
    return writers * rows / seconds


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"median {statistics.median(values):.2f}, p95 {q[-1]:.2f}, max {max(values):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per launcher")
    parser.add_argument("--rows", type=int, default=5000, help="metric rows per writer process")
    parser.add_argument("--skip-ray", action="store_true", help="local launcher and stores only")
    args = parser.parse_args()

    from core.config import RunConfig  # noqa: F401  (loads torch and the registries before any timing)
    from core.data.demo import write_demo
    from core.runs.cluster import use_launcher
    from core.runs.store import RunStore
    from tests.conftest import start_postgres, start_ray_head

    tmp = Path(tempfile.mkdtemp(prefix="chestlab-bench-launch-"))
    pg = head = None
    results: dict[str, Any] = {}
    try:
        print("starting PostgreSQL" + ("" if args.skip_ray else " and a Ray head") + " ...", flush=True)
        t0 = time.monotonic()
        pg = start_postgres()
        print(f"  PostgreSQL up in {time.monotonic() - t0:.1f} s")
        if not args.skip_ray:
            t0 = time.monotonic()
            head = start_ray_head()
            print(f"  Ray head up in {time.monotonic() - t0:.1f} s ({head.address})")

        print(f"metric rows: {4} writers x {args.rows} rows, batches of 50", flush=True)
        sqlite_url = f"sqlite:///{tmp / 'throughput.db'}"
        for name, url in (("sqlite", sqlite_url), ("postgresql", pg.new_database())):
            rate = throughput(url, args.rows)
            results[f"{name}_rows_per_s"] = rate
            print(f"  {name:10s} {rate:10,.0f} rows/s")

        data = write_demo(tmp / "demo", n_patients=16, size=96).root
        kinds = ["local"] if args.skip_ray else ["local", "ray"]
        for kind in kinds:
            ws = tmp / f"ws-{kind}"
            ws.mkdir()
            os.environ["CHESTLAB_STORE_URL"] = url = pg.new_database()
            use_launcher(kind, head.address if kind == "ray" else None, ws)
            print(f"{kind} launcher ({args.repeats} runs, store on PostgreSQL):", flush=True)
            results[kind] = time_launcher(kind, ws, RunStore(url=url), data, args.repeats, warmup=True)
    finally:
        os.environ.pop("CHESTLAB_STORE_URL", None)
        if head is not None:
            head.stop()
        if pg is not None:
            pg.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    print("\nsummary (seconds)")
    for kind in ("local", "ray"):
        if kind in results:
            r = results[kind]
            print(f"  {kind:5s} submit->running:    {_summary(r['submit_to_running_s'])}")
            print(f"  {kind:5s} cancel->cancelled:  {_summary(r['cancel_to_cancelled_s'])}")
            print(
                f"  {kind:5s} metric->store:      {_summary(r['metric_delays_s'])} ({len(r['metric_delays_s'])} rows)"
            )
    if "ray" in results:
        worst = max(results["ray"]["submit_to_running_s"])
        ok = "meets" if worst <= TARGETS["ray_submit_to_running_s"] else "MISSES"
        print(
            f"  target: Ray submit->running <= {TARGETS['ray_submit_to_running_s']:.0f} s on a warm head: {ok} (worst {worst:.2f} s)"
        )
    delays = [d for k in ("local", "ray") if k in results for d in results[k]["metric_delays_s"]]
    if delays:
        ok = "meets" if max(delays) <= TARGETS["metric_to_store_s"] else "MISSES"
        print(
            f"  target: a metric reaches the store within {TARGETS['metric_to_store_s']:.0f} s: {ok} (worst {max(delays):.3f} s)"
        )
    print(
        f"  SQLite {results['sqlite_rows_per_s']:,.0f} rows/s, PostgreSQL {results['postgresql_rows_per_s']:,.0f} rows/s (4 writers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
