"""The study driver: open or resume an Optuna study, check the sweep, run trials through a runner, the
console summary and what a study keeps. Driver side: never imports trial/ or tasks/ (so never torch).
"""
