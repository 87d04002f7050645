"""The README's main command: a complete simulated lane through every shipped scenario.

``python -m gate.demo`` is ``gate sim --scenario all --chip sim`` — the same parser, the
same code path — so the demonstration cannot drift from what maintenance staff run. The lane
reads the passport chip, as one at a border does: the simulated chip on pcscd +
vsmartcard-vpcd (``make setup`` installs both; pcscd is started when none runs), so the chip
scenarios run too. Extra arguments
are passed on (``python -m gate.demo --speed 10 --json``). The exit code is non-zero when
any scenario did not end as its file expects.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gate.cli import main as gate_main


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    return gate_main(["sim", "--scenario", "all", "--chip", "sim", *extra])


if __name__ == "__main__":
    raise SystemExit(main())
