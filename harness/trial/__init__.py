"""One trial, inside its process: the stages, the loop, shared state of warm workers, checkpoints, cost,
optimizer, tracking, models and adapters. Trial side: never imports study/, runners/ or cli/.
"""
