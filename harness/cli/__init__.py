"""The driver's command line: argument handling and the preflight checks before any compute. Driver
side: never imports trial/ or tasks/ (so never torch).
"""
