"""Do the CAMs of a model trained on the demo land on the lesion? (issue 6, slow)

A ResNet-18 trained from scratch at 128 px on the demo (the shared ``trained_demo_run``);
on the positive test images, each with its lesion box(es), the share of CAM energy inside
the boxes is compared with what a centred Gaussian blob of the same area gets (a map that
knows nothing about the image), and the pointing game is counted.

Measured on this model (2026-11-22), Grad-CAM targeting the true class:
  layer3 (8x8 at 128 px): energy in box 0.111, blob 0.039, pointing game 0.45
  layer4 (4x4, the default): energy 0.046, pointing game 0.09; Score-CAM layer3: 0.55
The issue asks for a pointing game >= 0.6; this model does not reach it (its maps peak at
the image border as often as on the lesion), so the assertions below guard what holds now
and the gap is reported in the issue rather than hidden by a lower target.
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


@pytest.fixture(scope="module")
def localisation(trained_demo_run):
    from core.data.images import read_gray
    from core.evaluate.predict import load_run_model
    from core.explain import scores as sc
    from core.explain import service as sv

    ws, run_id, _ = trained_demo_run
    model = load_run_model(run_id, workspace=ws)
    items = sv.split_items(model, "test", workspace=ws)
    out: dict[str, dict[str, float]] = {}
    blob = []
    for layer in ("layer3", None):
        energy, hits = [], []
        for item in items:
            image = read_gray(item.path)
            boxes = sc.boxes_to_map(item.boxes, image.shape[1], image.shape[0], model.img_size)
            (res,) = sv.explain(model, image, ["gradcam"], "true", layer, true_index=item.true_index, cache=False)
            energy.append(sc.energy_in_box(res.cam, boxes))
            hits.append(sc.pointing_game(res.cam, boxes))
            if layer is None:
                blob.append(_blob_energy(model.img_size, boxes))
        out[layer or "default"] = {"energy": float(np.mean(energy)), "pointing": float(np.mean(hits))}
    out["blob"] = {"energy": float(np.mean(blob))}
    print(f"\n{len(items)} positive test images: {out}")
    return out


def test_gradcam_energy_in_box_is_well_above_a_centred_blob(localisation):
    assert localisation["layer3"]["energy"] >= 2 * localisation["blob"]["energy"]
    assert localisation["default"]["energy"] > localisation["blob"]["energy"]


def test_gradcam_points_at_the_lesion_far_more_often_than_chance(localisation):
    # The boxes (with the 3% tolerance) cover a few percent of the image: a peak placed at random
    # hits about as often.
    assert localisation["layer3"]["pointing"] >= 0.35
