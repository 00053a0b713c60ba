"""Metric definitions (exact match, ROUGE-L, BLEU, perplexity) and the eval.metrics registry over
`evaluate`. Torch-free: the config validates metric names, the tasks compute them.
"""
