"""The first Python code of a submitted job: `earmark.cluster.jobs.ENTRYPOINT` runs this module.

Standard library only until it hands over to `earmark.cluster.run.main`: the interpreter it runs in
may lack earmark's dependencies, and then the job's log must say which module is missing, in
which interpreter, on which node, and how that interpreter was chosen, instead of ending in a
traceback from the middle of an import.
"""

from __future__ import annotations

import os
import platform
import socket
import sys

CHOSEN_ENV = "EARMARK_PYTHON_FROM"  # set by the entrypoint: how it picked this interpreter
PYTHON_ENV = "EARMARK_PYTHON"  # a user's choice of interpreter, e.g. `earmark submit --env ...`
HOW = {
    "env": f"named by {PYTHON_ENV}",
    "ray": "Ray runs under on that node",
    "path": "first on PATH (the one Ray runs under was not found)",
}


def interpreter() -> str:
    """`/path/to/python (Python 3.11.7), <how it was chosen>`."""
    how = HOW.get(os.environ.get(CHOSEN_ENV, ""), "that ran the entrypoint")
    return f"{sys.executable} (Python {platform.python_version()}), the interpreter {how}"


def missing_module(exc: ModuleNotFoundError) -> str:
    return (
        f"earmark job: Python module {exc.name!r} is not installed in {interpreter()}, on node "
        f"{socket.gethostname()}. Install earmark's dependencies into that interpreter, give the "
        f"job one that has them (`earmark submit --env {PYTHON_ENV}=/path/to/python`), or run "
        "it in an image that has them (`earmark submit --image`)."
    )


def main() -> None:
    print(f"earmark job: running with {interpreter()}", flush=True)
    try:
        from earmark.cluster.run import main as run

        run()
    except ModuleNotFoundError as exc:
        sys.exit(missing_module(exc))


if __name__ == "__main__":
    main()
