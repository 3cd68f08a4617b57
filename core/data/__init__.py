"""Datasets: formats read into one index table, image decoding, the demo data, tasks,
splits and caches."""
