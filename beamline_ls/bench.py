"""``beamline-ls bench writer|gating``: the benchmarks a user runs on their own machine.

``writer``: does this disk keep up with this camera (`beamline_ls.pipeline.bench`);
``gating``: optical gating on the heart corpus against the true phase
(`beamline_ls.gating.bench`).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first argument; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gating":
        from beamline_ls.gating.bench import main as gating_main

        return gating_main(argv[1:])
    if argv and argv[0] == "writer":
        from beamline_ls.pipeline.bench import main as writer_main

        return writer_main(argv)
    print("usage: beamline-ls bench {writer,gating} ...\n"
          "  writer  does my disk keep up? (bench writer --shape 2048x2048 --rate 100)\n"
          "  gating  optical gating on the heart corpus, scored against the true phase",
          file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
    return 0 if argv and argv[0] in ("-h", "--help") else 2
