"""Do the CAMs of a model trained on the demo land on the lesion? (issue 6, slow)

A ResNet-18 trained from scratch at 224 px on the demo (the shared ``trained_demo_run``);
on the positive test images, each with its lesion box(es), the share of CAM energy inside
the boxes is compared with what a centred Gaussian blob of the same area gets (a map that
knows nothing about the image), and the pointing game is counted.

Grad-CAM is scored at layer3 (14x14 at 224 px) and at the architecture's default, layer4
(7x7): one layer4 cell is 32 px, wider than half the demo's lesions, so its peak often lands
beside a small box. Measured on this model (2026-11-22), Grad-CAM targeting the true class,
55 positive test images (python -m pytest -s tests/unit/test_cam_localisation.py):
  layer3: energy in box 0.27 (blob 0.09), pointing game 0.93 (chance 0.08)
  layer4: energy 0.13, pointing game 0.47
The issue's targets (energy well above the blob, pointing >= 0.6) are asserted at layer3;
layer4 is asserted to beat the blob and chance, which is what it does.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _blob_energy(size: int, boxes: list) -> float:
    from core.explain import scores as sc

    yy, xx = np.mgrid[0:size, 0:size]
    area = sum(w * h for _, _, w, h in boxes)
    sigma = np.sqrt(area / np.pi)
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * sigma**2))
    return sc.energy_in_box(blob, boxes)


def _chance_hit(size: int, boxes: list) -> float:
    """The pointing game's hit rate of a peak placed uniformly at random: the share of
    pixels whose centre lies within the tolerance of a box."""
    from core.explain import scores as sc

    cy, cx = np.mgrid[0:size, 0:size] + 0.5
    tol = sc.pointing_tolerance((size, size))
    return float((sc.squared_box_distance(cy, cx, boxes) <= tol * tol).mean())


@pytest.fixture(scope="module")
def localisation(trained_demo_run):
    from core.data.images import read_gray
    from core.evaluate.predict import load_run_model
    from core.explain import scores as sc
    from core.explain import service as sv

    ws, run_id, _ = trained_demo_run
    model = load_run_model(run_id, workspace=ws)
    items = sv.split_items(model, "test", workspace=ws)
    images = [read_gray(item.path) for item in items]
    boxes = [
        sc.boxes_to_map(item.boxes, image.shape[1], image.shape[0], model.img_size)
        for item, image in zip(items, images, strict=True)
    ]
    out: dict[str, dict[str, float]] = {}
    for layer in ("layer3", None):
        energy, hits = [], []
        for item, image, box in zip(items, images, boxes, strict=True):
            (res,) = sv.explain(model, image, ["gradcam"], "true", layer, true_index=item.true_index, cache=False)
            energy.append(sc.energy_in_box(res.cam, box))
            hits.append(sc.pointing_game(res.cam, box))
        out[layer or "default"] = {"energy": float(np.mean(energy)), "pointing": float(np.mean(hits))}
    out["blob"] = {"energy": float(np.mean([_blob_energy(model.img_size, b) for b in boxes]))}
    out["chance"] = {"pointing": float(np.mean([_chance_hit(model.img_size, b) for b in boxes]))}
    print(f"\n{len(items)} positive test images: {out}")
    return out


def test_gradcam_energy_in_box_is_well_above_a_centred_blob(localisation):
    assert localisation["layer3"]["energy"] >= 2 * localisation["blob"]["energy"]
    assert localisation["default"]["energy"] > localisation["blob"]["energy"]


def test_gradcam_points_at_the_lesion(localisation):
    assert localisation["layer3"]["pointing"] >= 0.6
    # Chance (a peak placed at random) is the share of the image within the tolerance of a box.
    assert localisation["default"]["pointing"] > 1.5 * localisation["chance"]["pointing"]
