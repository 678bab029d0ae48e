"""Run the code blocks of one documentation page, in order, like a reader would.

Called by test_docs_blocks.py as ``python run_blocks.py STEPS.json`` in a fresh working
directory. Each step is one fenced block: ``python`` blocks run in one shared namespace
(a page reads like one session), ``bash`` blocks run with ``bash -euo pipefail``, and a
block marked ``<!-- file: NAME -->`` is written to NAME (a module the following blocks
import or pass to ``--module``). The first failing block stops the page and is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path


def main(steps_file: str) -> int:
    steps = json.loads(Path(steps_file).read_text(encoding="utf-8"))
    sys.path.insert(0, os.getcwd())
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for step in steps:
        where = f"{step['page']}:{step['line']}"
        print(f"--- {where} ({step['kind']})", flush=True)
        try:
            if step["kind"] == "file":
                Path(step["name"]).write_text(step["code"], encoding="utf-8")
            elif step["kind"] == "python":
                exec(compile(step["code"], where, "exec"), namespace)
            else:
                subprocess.run(["bash", "-euo", "pipefail", "-c", step["code"]], check=True)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED: the block at {where}", flush=True)
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
