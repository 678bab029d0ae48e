"""The full fault-injection count behind docs/reliability.md, and its figures.

Usage (from the repository root)::

    .venv/bin/python scripts/reliability.py                  # 22 steps: ≈ 176 trials
    .venv/bin/python scripts/reliability.py --steps 3 --rows 20000 --json out.json

Starts a dedicated embedded PostgreSQL, loads eight pipelines (append / merge / scd1 /
scd2, cross-DB and same-DB) with ``flow run``, then for each of ``--steps`` source
changes runs every pipeline once on a reference warehouse and once on the faulted
warehouse while a fault is injected (SIGKILL during COPY, during the set-based
statement, just before COMMIT, at a random moment; the source session terminated
mid-COPY; the server crashed and restarted mid-run), checks old-or-new state and the
convergence of the next run (``tests/reliability/reliability_faults.py`` says how).

Prints the trials per fault kind and mode and the totals — rows lost, rows duplicated,
secrets leaked, mixed states — and exits 1 when any of them is not 0 (or when fewer
than ``--min-kills`` SIGKILLs landed on a running ``flow run``). The hostile-input and
secrets figures come from the pytest modules beside the harness; ``--with-suite`` runs
them too and adds their counts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import reliability_faults as rf  # noqa: E402  (lives in the test tree, found above)


def _progress(result: rf.TrialResult) -> None:
    mark = "ok " if result.ok else "FAIL"
    landed = "landed" if result.landed else "missed"
    print(
        f"{mark} {result.case:9} {result.fault:17} {landed:7} state after fault: "
        f"{result.outcome:5} exit {result.exit_code}",
        flush=True,
    )
    for problem in result.problems:
        print(f"     {problem}", flush=True)


def _suite_figures() -> dict[str, int]:
    from hostile_inputs import CORPUS

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "reliability"),
            "--deselect",
            "tests/reliability/test_faults.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    print(f"pytest tests/reliability (without the fault loop): {tail}")
    return {"hostile_inputs": len(CORPUS), "suite_exit_code": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=22, help="source changes (8 trials each)")
    parser.add_argument("--rows", type=int, default=40_000, help="initial source rows")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the random kills")
    parser.add_argument("--min-kills", type=int, default=100, help="SIGKILLs that must land")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--with-suite", action="store_true", help="run the other modules too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="efrel-work") as work:
        tally = rf.run_trials(
            Path(work), steps=args.steps, rows=args.rows, seed=args.seed, progress=_progress
        )
    figures = tally.to_dict()
    figures["arguments"] = {"steps": args.steps, "rows": args.rows, "seed": args.seed}
    figures["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    print("\nfaults landed on a running flow run, per kind and mode:\n")
    modes = ("append", "merge", "scd1", "scd2")
    print("| fault | " + " | ".join(modes) + " | total |")
    print("| --- | " + " | ".join("---:" for _ in modes) + " | ---: |")
    table = tally.table()
    for fault in rf.FAULTS:
        counts = [table.get((fault, m), 0) for m in modes]
        print(f"| {fault} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    print()
    for key, value in figures["totals"].items():
        print(f"{key:16} {value}")
    print(f"{'seconds':16} {figures['seconds']}")

    if args.with_suite:
        figures["suite"] = _suite_figures()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")

    totals = figures["totals"]
    bad = [
        k
        for k in (
            "mixed_states",
            "rows_lost",
            "rows_duplicated",
            "secrets_leaked",
            "other_problems",
        )
        if totals[k]
    ]
    if figures.get("suite", {}).get("suite_exit_code"):
        bad.append("suite")
    if totals["kill_trials"] < args.min_kills:
        bad.append(f"only {totals['kill_trials']} kill trials landed (< {args.min_kills})")
    if bad:
        print(f"\nFAILED: {', '.join(bad)}")
        return 1
    print("\nall faults left old-or-new state; every next run converged; nothing leaked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
