"""Run one stored run in this process: the body of ``python -m core train``.

Used both by the worker's training processes (``--run-id``) and by a foreground
``python -m core train``. Whatever happens, the run ends with a status in the store, its log
and its checkpoints on disk: a ChestLabError becomes ``failed`` with its one-line reason, any
other exception ``failed`` with its type, message and the traceback in the log.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from core.errors import ChestLabError
from core.fileio import atomic_write_json
from core.runs import run_dir
from core.runs.store import RunRecord, RunStore, StoreReporter
from core.train.reporter import FolderReporter, MultiReporter, Reporter

log = logging.getLogger("chestlab.train")


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler


def execute_run(
    store: RunStore,
    record: RunRecord,
    *,
    device: str | None = None,
    workspace: Any = None,
    extra_reporters: tuple[Reporter, ...] = (),
    log_file: bool = False,
) -> dict[str, Any]:
    """Train ``record`` to its end; returns the CLI's result dict
    ``{"run_id", "status", "best", "test"}``. Re-raises after recording a failure."""
    from core.config import RunConfig
    from core.train.loop import fit

    folder = run_dir(record.id, workspace)
    folder.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(folder / "log.txt") if log_file else None
    logging.getLogger().setLevel(logging.INFO)
    store_reporter = StoreReporter(store, record.id)
    reporter = MultiReporter(FolderReporter(folder), store_reporter, *extra_reporters)
    try:
        config = RunConfig.from_dict(record.config)
        if device:
            config = config.replace(device=device)
        atomic_write_json(folder / "config.json", config.to_dict())
        store.mark_started(
            record.id,
            os.getpid(),
            socket.gethostname(),
            config.device,
            record.launcher or "foreground",
            record.launcher_ref or str(os.getpid()),
        )
        log.info(
            "run %s (%s) starting%s on %s",
            record.id,
            record.name,
            " (resume)" if record.resume else "",
            config.device,
        )
        result = fit(config, folder, reporter, resume=record.resume, workspace=workspace)
        reporter.finish(result.status, result.best, result.test)
        log.info("run %s %s; best %s", record.id, result.status, result.best)
        return {"run_id": record.id, "status": result.status, "best": result.best, "test": result.test}
    except ChestLabError as exc:
        log.error("run %s failed: %s", record.id, exc)
        reporter.finish("failed", {}, {}, str(exc))
        raise
    except KeyboardInterrupt:
        reporter.finish("cancelled", {}, {}, "interrupted")
        raise
    except BaseException as exc:
        tb = traceback.format_exc()
        log.error("run %s failed:\n%s", record.id, tb)
        reporter.finish("failed", {}, {}, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        sys.stdout.flush()
