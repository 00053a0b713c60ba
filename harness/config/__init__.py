"""The config: Hydra composition, the typed schema and its one-line errors, the sweep and LoRA sections,
the static model presets and hardware facts. Torch-free; both sides read it and it imports neither.
"""
