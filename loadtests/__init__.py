"""Load tests, tuning and the side-by-side benchmark for the LeNet-5 TorchServe endpoint.

- `locustfile.py`: Locust users that send real MNIST digits and check every answer.
- `slo.py`: the SLO gate (failure ratio, p99) that decides a run's exit code.
- `runner.py`: `python -m loadtests run`, a headless Locust run with CSV/HTML/JSON and a chart.
- `tune.py`: `python -m loadtests tune`, the batch/worker/thread sweep.
- `bench.py`: `python -m loadtests bench`, in-process ceiling vs stock vs tuned TorchServe.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
RESULTS_DIR = PACKAGE_DIR / "results"
LOCUSTFILE = PACKAGE_DIR / "locustfile.py"
SHAPES_FILE = PACKAGE_DIR / "shapes.py"
LOCUST_CONF = PACKAGE_DIR / "locust.conf"
