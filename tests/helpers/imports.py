"""What importing something costs: the modules a fresh interpreter loads for a piece of code."""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["modules_loaded_by"]


def modules_loaded_by(code: str, *, after: str = "import airflow.sdk") -> list[str]:
    """The modules a new interpreter loads while running ``code``, once ``after`` has run.

    :param code: Python statements (the import under test and whatever it should survive)
    :param after: what is loaded anyway before it (not counted)
    """
    program = (
        f"import sys, json\n{after}\nbefore = set(sys.modules)\n{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])
