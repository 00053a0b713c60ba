"""Datasets as rows: loading (embedded, fetched-and-cached, local file, hub), splits, nested subsets, and
where files come from. Torch-free: the driver's preflight reads it as the trial does.
"""
