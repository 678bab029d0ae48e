"""``python -m ematix_flow_operator`` — the same as the ``ematix-flow-operator`` command."""

from __future__ import annotations

from ematix_flow_operator.cli import main

if __name__ == "__main__":
    main()
