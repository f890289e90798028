#!/usr/bin/env python3
"""Predictability figures (``list show``) on a large drawn list: time of the pure part.

Draws one stratum of N slots (default 1,000,000; 1:1, blocks of 2 and 4) with the list
generator, groups it into blocks, and times ``predictability.assess`` — the computation
``list show`` and the statistician's page run after opening the arms. Prints the contract
line and the time.

    .venv/bin/python bench/predictability.py [--slots N]
"""

from __future__ import annotations

import argparse
import itertools
import time

from randomizer import predictability, sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=1_000_000)
    args = parser.parse_args()
    arms = [sequence.ArmRatio("A", 1), sequence.ArmRatio("B", 1)]
    slots = sequence.generate(bytes(32), ["s"], arms, [2, 4], per_stratum=args.slots)
    blocks = [[s.arm for s in group] for _, group in itertools.groupby(slots, lambda s: s.block)]
    start = time.perf_counter()
    figures = predictability.assess(blocks, {"A": 1, "B": 1})
    elapsed = time.perf_counter() - start
    print(predictability.summary_line(figures))
    print(f"assess: {elapsed:.3f} s for {figures.slots:,} slots in {len(blocks):,} blocks")


if __name__ == "__main__":
    main()
