"""python -m harness.data fetch   (the setup step calls this): the default dataset into the harness cache."""
import sys

from harness.data.load import fetch_rt_polarity

if sys.argv[1:] == ["fetch"]:
    print(f"rt_polarity -> {fetch_rt_polarity()}")
else:
    sys.exit("usage: python -m harness.data fetch")
