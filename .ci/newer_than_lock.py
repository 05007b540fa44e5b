"""Print the installed packages whose version is not one from requirements-dev.lock.

`make test-latest` installs the newest releases pyproject.toml allows. When that install
holds exactly the locked versions, running the suite again would test the same thing twice,
so the target says so and stops; any difference (printed) means the suite runs.

Exit status: 0 when every installed package is at its locked version, 1 otherwise.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def main(lock: str) -> int:
    pins: dict[str, set[str]] = {}  # a universal lock may pin a name per Python version
    for line in Path(lock).read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins.setdefault(_name(match[1]), set()).add(match[2])
    newer = []
    for dist in distributions():
        name = _name(dist.metadata["Name"])
        if name in pins and dist.version not in pins[name]:
            newer.append(f"{name} {' or '.join(sorted(pins[name]))} -> {dist.version}")
    for line in sorted(newer):
        print(f"  {line}")
    return 1 if newer else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
