"""Load tests of the LeNet-5 endpoint (`python -m loadtests`): `locustfile.py`, `shapes.py` and
`slo.py` are what Locust runs, with its settings in `locust.conf`; `pool.py` the digits it sends;
`runner.py` (+ `charts.py`) one run and its figures; `tune.py`, `bench.py`, `soak.py` the jobs."""

from dataclasses import field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
LOCUSTFILE = PACKAGE_DIR / "locustfile.py"
SHAPES_FILE = PACKAGE_DIR / "shapes.py"
LOCUST_CONF = PACKAGE_DIR / "locust.conf"


def option(default, help: str, *flags: str):
    """A dataclass field that `python -m loadtests` offers as an option: `--<field-name>` (or
    `flags`), this help text, the field's type and default."""
    metadata = {"help": help, "flags": flags}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
