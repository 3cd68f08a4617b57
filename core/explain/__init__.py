"""Explanations: the CAM method registry, our fast Score-CAM, overlays, localisation and
faithfulness scores, the map cache, and the service the Inspect page and the CLI call.

- ``methods``: ``METHODS`` registry (``get_method``, ``list_methods``), ``LogitTarget``
- ``scorecam``: batched, bf16, surrogate fast mode; ``estimate_seconds``
- ``scores``: ``energy_in_box``, ``pointing_game``, ``deletion_auc``, ``road_score``
- ``overlay``: ``overlay``, ``draw_boxes``, ``grid_png``
- ``cache``: ``MapCache``, ``MapKey``
- ``service``: ``explain``, ``score_split``, ``list_layers``, ``estimate_scorecam_seconds``

Never imports streamlit.
"""
