"""How a trial process runs for the driver: a fresh process per trial, warm workers (the driver's end of
the worker protocol), SLURM jobs. Driver side: never imports trial/ or tasks/.
"""
