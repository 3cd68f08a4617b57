"""Speed of CAM methods and of our Score-CAM against pytorch-grad-cam's (issue 6, item 6).

In one process, on the same images and the same ResNet-18 (3 classes, 1-channel stem):

- seconds per map of every method (Grad-CAM family and Eigen-CAM on a few images,
  Ablation-CAM on one);
- pytorch-grad-cam's ``ScoreCAM`` at its defaults (batch 16, fp32) against our full
  Score-CAM, interleaved image by image on ``--lib-images`` images (the library takes 6-8 s
  per map at 224 px here; its per-map time hardly varies between images, so a few images
  give it), and their agreement;
- the arithmetic floor of an exact map: one forward pass per live channel times the
  model's FLOPs, at this CPU's measured matrix-product peak (the best of three sizes), and
  so the most any exact Score-CAM could gain over the library on this machine;
- our full Score-CAM on ``--images`` images and the fast mode's agreement with it for each
  k in ``--ks``: the Pearson r of the maps and the IoU of their top-20% regions, for our
  surrogate fast mode and for plain top-k (the rest weighted 0). Fast-mode maps for the
  sweep are assembled from the full run's channel scores exactly as the fast mode
  assembles them (a scored channel's score does not depend on which others are scored);
  the default k is also run for real, timed, and checked against its assembled twin;
- the recommended k: the smallest with mean r >= 0.9 for the surrogate fast mode.

The model: ``--run RUN_ID`` (a trained run; images are its dataset's test split, positives
with lesion boxes first), else the bench's own demo run: a ResNet-18 trained from scratch
on the demo at 224 px for ``--train-epochs`` epochs through ChestLab's trainer, as a user's
run would be (about 2-3 min the first time, then kept in the workspace's run store), or
``--random`` for random weights (said so in the output).

    python bench/cam.py [--run RUN_ID] [--images 20] [--lib-images 2] [--ks 8,16,32,64,128]

Targets on 2 cores: our full Score-CAM >= 3x faster than the library's; the fast mode at
the default k >= 10x faster with mean r >= 0.9. The last line is ``scorecam_ratio: R``, the
library's seconds per map divided by our full Score-CAM's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"full_speedup": 3.0, "fast_speedup": 10.0, "fast_r": 0.9}
QUICK_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")
DEMO_SIZE = 224


def _print(*args: Any) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------- model and images


def _demo_plan(n_patients: int) -> list[Any]:
    from core.data.demo import plan_demo

    return plan_demo(0, n_patients)


def _render(item: Any, size: int = DEMO_SIZE) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    from core.data.demo import render_item

    img, boxes = render_item(item, size)
    return (img * 255).round().astype(np.uint8), [(b.x, b.y, b.width, b.height) for b in boxes]


def _normalise(u8: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(u8).float().div(255.0)[:, None] - 0.449) / 0.226


BENCH_RUN = "bench-cam-resnet18-demo-{size}px-e{epochs}"


def _demo_run(epochs: int, workspace: str | None) -> str:
    """The id of a ResNet-18 trained from scratch on the demo at 224 px through ChestLab's own
    trainer (what a user's run is), trained on first use and kept in the workspace's store."""
    from core.config import RunConfig
    from core.data.demo import write_demo
    from core.runs.execute import execute_run, start_here
    from core.runs.store import RunStatus, RunStore
    from core.workspace import cache_dir

    name = BENCH_RUN.format(size=DEMO_SIZE, epochs=epochs)
    store = RunStore(workspace=workspace)
    for rec in store.list_runs():
        if rec.name == name and rec.status is RunStatus.DONE:
            return rec.id
    _print(f"training {name} on the demo through ChestLab's trainer ({epochs} epochs; about 2-3 min, once)")
    demo = write_demo(cache_dir("bench", workspace) / "demo", seed=0)
    config = RunConfig(data=str(demo.root), arch="resnet18", pretrained="none", loss="weighted_ce", epochs=epochs,
                       img_size=DEMO_SIZE, batch_size=32, lr=1e-3, schedule="onecycle", device="cpu", seed=0,
                       name=name)  # fmt: skip
    rec = start_here(store, config)
    result = execute_run(store, rec, workspace=workspace)
    if result["status"] != "done":
        raise SystemExit(f"the bench's demo run {rec.id} ended {result['status']}; see its log")
    _print(f"  val macro AUC {result['best'].get('val_auc', float('nan')):.3f}, test {result['test'].get('auc'):.3f}")
    return rec.id


def _random_model() -> tuple[torch.nn.Module, str]:
    from models import build_model

    torch.manual_seed(0)
    return build_model("resnet18", 3, 1).eval(), "ResNet-18 with RANDOM weights (--random)"


def _demo_images(n: int, patients: int, model: torch.nn.Module) -> tuple[list[np.ndarray], list[int], str]:
    from core.data.demo import CLASSES

    test = [it for it in _demo_plan(patients) if it.split == "test"]
    rendered = [_render(it) for it in test]
    labels = np.array([CLASSES.index(it.label) for it in test])
    with torch.inference_mode():
        pred = model(_normalise(np.stack([r[0] for r in rendered]))).argmax(1).numpy()
    accuracy = (
        f"test accuracy at {DEMO_SIZE} px: {(pred == labels).mean():.3f} on {len(labels)} images "
        + "(per class "
        + ", ".join(f"{c} {(pred[labels == i] == i).mean():.2f}" for i, c in enumerate(CLASSES))
        + ")"
    )
    positives = [i for i, it in enumerate(test) if it.label != "normal"][:n]
    return [rendered[i][0] for i in positives], [int(labels[i]) for i in positives], accuracy


def _run_images(run_id: str, n: int, workspace: str | None) -> tuple[Any, list[np.ndarray], list[int]]:
    from core.data.images import read_gray
    from core.evaluate.predict import load_run_model
    from core.explain.service import run_dataset

    loaded = load_run_model(run_id, workspace=workspace)
    table, boxes = run_dataset(loaded.config, loaded.classes, workspace)
    test = table[table["split"] == "test"].sort_values("path")
    with_boxes = set(boxes["path"]) if len(boxes) else set()
    ordered = [r for r in test.itertuples() if r.path in with_boxes] + [
        r for r in test.itertuples() if r.path not in with_boxes
    ]
    rows = ordered[:n]
    return (
        loaded,
        [read_gray(r.path) for r in rows],
        [-1 if r.true_index != r.true_index else int(r.true_index) for r in rows],
    )


# ---------------------------------------------------------------- measurements


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _top_iou(a: np.ndarray, b: np.ndarray, share: float = 0.2) -> float:
    ta, tb = a >= np.quantile(a, 1 - share), b >= np.quantile(b, 1 - share)
    return float((ta & tb).sum() / max(1, (ta | tb).sum()))


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _macs_per_forward(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``x`` (1, C, S, S): every Conv2d and Linear."""
    total = [0]

    def count(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += out.numel() * per_output
        else:
            total[0] += out.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros_like(x))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _gemm_peak(dtype: torch.dtype) -> float:
    """FLOP/s of this CPU's best case: square matrix products in ``dtype``, the best of
    several sizes (a size that fits the caches runs closest to the CPU's peak)."""
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        reps = max(2, round(10 * (2048 / n) ** 3))
        for _ in range(3):
            a @ b
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def _assemble(activation: torch.Tensor, weights: np.ndarray, size: int) -> np.ndarray:
    """BaseCAM's finishing: weighted sum, ReLU, min-max, resize."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    cam = np.maximum((weights[:, None, None] * activation.cpu().numpy()).sum(axis=0), 0)
    return np.clip(scale_cam_image(cam[None], (size, size))[0], 0, 1)


def _activation(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer4's activation (C, h, w) for one image."""
    grabbed = {}
    handle = model.layer4.register_forward_hook(lambda m, a, o: grabbed.__setitem__("a", o.detach()))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    return grabbed["a"][0].float()


def _live_channels(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Channels of layer4 that are not constant: one masked forward pass each."""
    from core.explain.scorecam import blank_channels

    return int((~blank_channels(_activation(model, x))).sum())


def _full_scores(
    model: torch.nn.Module, x: torch.Tensor, target: Any, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """layer4's activation and every live channel's masked score (the full mode's work)."""
    from core.explain.scorecam import blank_channels, choose_batch, inference_model, masked_scores

    inf = inference_model(model, precision)
    act = _activation(model, x)
    blank = blank_channels(act)
    live = torch.nonzero(~blank).flatten()
    scores = torch.full((act.shape[0],), float("-inf"))
    scores[live] = masked_scores(inf, x, act, live, target, choose_batch(inf, x, len(live))).cpu()
    if bool(blank.any()):
        scores[blank] = inf.scores(torch.zeros_like(x), target)[0].cpu()
    return act, scores


def _fast_weights(act: torch.Tensor, scores: torch.Tensor, k: int, strategy: str) -> np.ndarray:
    from core.explain.scorecam import DEFAULT_CRITERION, blank_channels, select_channels, surrogate_scores

    blank = blank_channels(act)
    live = torch.nonzero(~blank).flatten()
    if k >= len(live):
        return torch.softmax(scores, 0).numpy()
    scored = select_channels(act, live, k, DEFAULT_CRITERION, strategy)
    out = torch.full_like(scores, float("-inf"))
    if strategy == "surrogate":
        out[live] = surrogate_scores(act, scored, scores[scored])[live]
    out[scored] = scores[scored]
    out[blank] = scores[blank]
    return torch.softmax(out, 0).numpy()


def main() -> None:  # noqa: C901 - one linear report
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--run", metavar="RUN_ID", help="a trained run (ResNet-18 expected); default: the bench's demo run"
    )
    p.add_argument("--workspace", metavar="DIR")
    p.add_argument("--random", action="store_true", help="random weights instead of a trained model")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--lib-images", type=int, default=2, help="images for the library's Score-CAM (slow)")
    p.add_argument("--quick-images", type=int, default=5, help="images for the per-method timings")
    p.add_argument("--ks", default="8,16,32,64,128")
    p.add_argument("--train-epochs", type=int, default=8, help="epochs of the bench's demo run (trained once)")
    p.add_argument("--patients", type=int, default=300, help="demo patients rendered for --random")
    args = p.parse_args()
    if args.workspace:
        os.environ["CHESTLAB_WORKSPACE"] = args.workspace

    from core.explain.methods import LogitTarget, get_method
    from core.explain.scorecam import DEFAULT_TOP_K, score_cam
    from core.train.allocator import tune_allocator
    from core.train.device import cpu_has_native_bf16, resolve_precision

    started = time.perf_counter()
    _print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 native: {cpu_has_native_bf16()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    # As loading a run's model does in the app and the CLI. Process-wide: the library's
    # passes below run with it too, so the ratio compares the two under the same conditions.
    _print(f"allocator (ours and the library's): {tune_allocator()}")
    if not args.run and not args.random:
        args.run = _demo_run(args.train_epochs, args.workspace)
    if args.run:
        loaded, images, labels = _run_images(args.run, args.images, args.workspace)
        model, size = loaded.model.eval(), loaded.img_size
        to_x = loaded.to_input
        what, accuracy = f"run {args.run} ({loaded.arch}, {len(loaded.classes)} classes)", ""
        single = bool(loaded.single_logit)
        precision = loaded.config.precision
    else:
        model, what = _random_model()
        images, labels, accuracy = _demo_images(args.images, args.patients, model)
        size, single, precision = DEMO_SIZE, False, "auto"

        def to_x(img: np.ndarray) -> torch.Tensor:
            return _normalise(img[None])

    if not hasattr(model, "layer4"):
        raise SystemExit("bench/cam.py expects a ResNet (its layer4 is the target layer)")
    prec = resolve_precision(precision, next(model.parameters()).device)
    _print(f"model: {what}; {len(images)} images at {size} px; our precision {prec.name}")
    if accuracy:
        _print(accuracy)
    xs = [to_x(img) for img in images]
    with torch.inference_mode():
        preds = [int(model(x).argmax(1)) for x in xs]
    targets = [LogitTarget(int(p), single) for p in preds]  # explain the predicted class
    layers = [model.layer4]

    # warm-up: first calls pay for allocations, oneDNN kernels and our inference copy
    get_method("gradcam").compute(model, xs[0], layers, targets[0])
    score_cam(model, xs[0], layers, targets[0], top_k=8, precision=precision)

    _print("\nseconds per map (median)")
    per_method: dict[str, float] = {}
    for name in QUICK_METHODS:
        compute = get_method(name).compute
        times = [
            _timed(lambda i=i, f=compute: f(model, xs[i], layers, targets[i], arch="resnet18"))[1]
            for i in range(min(args.quick_images, len(xs)))
        ]
        per_method[name] = statistics.median(times)
        _print(f"  {name:<14} {per_method[name]:8.3f}")
    _, per_method["ablationcam"] = _timed(
        lambda: get_method("ablationcam").compute(model, xs[0], layers, targets[0])
    )
    _print(f"  {'ablationcam':<14} {per_method['ablationcam']:8.3f}  (1 image)")

    _print(f"\nScore-CAM, library at its defaults vs ours (full), interleaved on {args.lib_images} images")
    # One untimed full map of each first: kernel selection for the large batches and the
    # heap's first growth are paid once per process, not per map.
    get_method("scorecam_lib").compute(model, xs[-1], layers, targets[-1])
    score_cam(model, xs[-1], layers, targets[-1], precision=precision)
    lib_t, ours_t, fp32_r, auto_r = [], [], [], []
    for i in range(min(args.lib_images, len(xs))):
        lib_map, t_lib = _timed(
            lambda i=i: get_method("scorecam_lib").compute(model, xs[i], layers, targets[i])
        )
        our_map, t_ours = _timed(lambda i=i: score_cam(model, xs[i], layers, targets[i], precision=precision))
        fp32_map = score_cam(model, xs[i], layers, targets[i], precision="fp32")
        lib_t.append(t_lib)
        ours_t.append(t_ours)
        fp32_r.append(_pearson(lib_map, fp32_map))
        auto_r.append(_pearson(lib_map, our_map))
        _print(
            f"  image {i}: library {t_lib:7.2f} s   ours {t_ours:6.2f} s   r(ours fp32, library) {fp32_r[-1]:.4f}   "
            f"r(ours {prec.name}, library) {auto_r[-1]:.4f}"
        )

    _print(f"\nour full Score-CAM on {len(xs)} images, and the fast mode's agreement with it")
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    full_maps, full_times, sims = [], [], []
    fast_r: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for i, x in enumerate(xs):
        (act, scores), t = _timed(lambda x=x, i=i: _full_scores(model, x, targets[i], precision))
        full_times.append(t)
        full = _assemble(act, torch.softmax(scores, 0).numpy(), size)
        full_maps.append(full)
        for strategy in ("surrogate", "top"):
            for k in ks:
                fast = _assemble(act, _fast_weights(act, scores, k, strategy), size)
                fast_r.setdefault((strategy, k), []).append((_pearson(full, fast), _top_iou(full, fast)))
        sims.append(_assemble(act, _fast_weights(act, scores, DEFAULT_TOP_K, "surrogate"), size))
    _print(
        f"  {'k':>5}  {'surrogate r (min)':>18}  {'IoU top20%':>10}  {'top-k only r (min)':>19}  {'IoU top20%':>10}"
    )
    recommended = None
    for k in ks:
        s, t = np.array(fast_r[("surrogate", k)]), np.array(fast_r[("top", k)])
        _print(
            f"  {k:>5}  {s[:, 0].mean():>10.3f} ({s[:, 0].min():.3f})  {s[:, 1].mean():>10.3f}  "
            f"{t[:, 0].mean():>11.3f} ({t[:, 0].min():.3f})  {t[:, 1].mean():>10.3f}"
        )
        if recommended is None and s[:, 0].mean() >= TARGETS["fast_r"]:
            recommended = k
    fast_times, real_r, fast_full_r, fast_iou = [], [], [], []
    for i, x in enumerate(xs):
        fast, t = _timed(
            lambda x=x, i=i: score_cam(model, x, layers, targets[i], top_k=DEFAULT_TOP_K, precision=precision)
        )
        fast_times.append(t)
        real_r.append(_pearson(fast, sims[i]))
        fast_full_r.append(_pearson(fast, full_maps[i]))
        fast_iou.append(_top_iou(fast, full_maps[i]))

    lib_s, ours_s = statistics.mean(lib_t), statistics.mean(ours_t)
    full_s, fast_s = statistics.median(full_times), statistics.median(fast_times)
    ratio, fast_ratio = lib_s / ours_s, lib_s / fast_s
    fast_mean_r = float(np.mean(fast_full_r))
    _print(
        f"\n  fast mode as run (k={DEFAULT_TOP_K}): {fast_s:.2f} s per map (median of {len(xs)}), "
        f"r with full {fast_mean_r:.3f} (min {min(fast_full_r):.3f}), IoU top-20% {np.mean(fast_iou):.3f}, "
        f"r with its assembled twin {np.mean(real_r):.4f}"
    )
    _print(f"  full mode: {full_s:.2f} s per map (median of {len(xs)})")
    _print(
        f"  recommended k (smallest with mean r >= {TARGETS['fast_r']}): {recommended}; default k: {DEFAULT_TOP_K}"
    )

    # The arithmetic floor: an exact Score-CAM runs one forward pass per live channel, so no
    # implementation on this CPU can beat (passes x FLOPs per pass) / (its peak FLOP/s).
    live = statistics.mean(_live_channels(model, xs[i]) for i in range(len(lib_t)))
    flops = 2 * _macs_per_forward(model, xs[0])
    peak = _gemm_peak(torch.bfloat16 if prec.name == "bf16" else torch.float32)
    floor_s = live * flops / peak
    _print(
        f"\narithmetic floor of an exact map: {live:.0f} passes x {flops / 1e9:.2f} GFLOP at this CPU's "
        f"{prec.name} matrix-product peak of {peak / 1e9:.0f} GFLOP/s = {floor_s:.2f} s; ours runs at "
        f"{floor_s / ours_s:.0%} of it; the most any exact Score-CAM can gain over the library here: "
        f"{lib_s / floor_s:.2f}x"
    )

    _print("\nsummary")
    _print(
        f"  library Score-CAM {lib_s:.2f} s/map; ours full {ours_s:.2f} s/map ({ratio:.1f}x); "
        f"ours fast k={DEFAULT_TOP_K} {fast_s:.2f} s/map ({fast_ratio:.1f}x)"
    )
    _print(
        f"  agreement with the library: r = {np.mean(fp32_r):.4f} (fp32), {np.mean(auto_r):.4f} ({prec.name})"
    )
    checks = [
        (f"ours full >= {TARGETS['full_speedup']:.0f}x the library", ratio >= TARGETS["full_speedup"]),
        (f"fast >= {TARGETS['fast_speedup']:.0f}x the library", fast_ratio >= TARGETS["fast_speedup"]),
        (f"fast mean r >= {TARGETS['fast_r']}", fast_mean_r >= TARGETS["fast_r"]),
        ("full agrees with the library in fp32 (r > 0.98)", float(np.mean(fp32_r)) > 0.98),
    ]
    for label, ok in checks:
        _print(f"  {'met   ' if ok else 'MISSED'} {label}")
    _print(f"  total bench time {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")
    _print(f"scorecam_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
