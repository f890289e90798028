"""Benchmark: generate and seal a 1,000,000-slot allocation list.

Prints, for two list lengths (to show that memory does not grow with the length):

* **generate + seal**: the list service's own code (``services.lists.generate_list``:
  ChaCha20 generation, AES-256-GCM sealing with row-bound associated data, randomization
  numbers, fingerprint, batching) with the database INSERT replaced by a no-op;
* **raw AES-GCM**: in the same process, right after, sealing as many equally sized payloads
  (same arm codes, same associated-data length, a fresh ``os.urandom`` nonce each, as the
  service does) with nothing else around it — and the ratio of the two rates;
* **full path into SQLite**: the same service call including the INSERTs and the commit;
* **peak memory**: the peak of Python allocations (tracemalloc, a separate run because
  tracing slows everything down) and each run's peak resident set size.

Each measurement runs in a fresh process so that peaks do not carry over.
Run: ``python bench/lists.py`` (``--slots N`` for another length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

STUDY = """
[study]
code = "BENCH"
title = "Benchmark study"
registry_id = "NCT00000000"

[[arms]]
code = "ACTIVE"
name = "Active"
ratio = 1

[[arms]]
code = "PLACEBO"
name = "Placebo"
ratio = 1

[randomization]
block_sizes = [2, 4, 6]
per_stratum = 100
stratify_by_site = true

[[factors]]
code = "grade"
name = "Grade"
levels = ["low", "high"]

[[sites]]
code = "S1"
name = "Site one"

[[sites]]
code = "S2"
name = "Site two"

[[visits]]
code = "baseline"
day = 0
dispense = true

[[eligibility]]
code = "consent"
text = "Consent"
kind = "inclusion"
type = "boolean"
"""
STRATA = 4
TARGET_RATE = 100_000
TARGET_RATIO = 0.25


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, slots: int) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns its figures."""
    from randomizer import audit, create_app, migrate
    from randomizer.db import db
    from randomizer.instance import ensure_instance_files
    from randomizer.models import ListKind
    from randomizer.services import lists
    from randomizer.services.studies import load_study

    folder = Path(tempfile.mkdtemp(prefix="bench-lists-"))
    ensure_instance_files(folder / "instance")
    os.environ["RANDOMIZER_INSTANCE_PATH"] = str(folder / "instance")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.sqlite3'}"})
    with app.app_context():
        migrate.upgrade(db.engine)
        session = db.session()
        study, _ = load_study(session, text=STUDY, filename="bench.toml")
        session.commit()
        if mode == "seal":
            lists._insert = lambda session, batch, progress: None  # type: ignore[assignment]
        if mode == "tracemalloc":
            tracemalloc.start()
        started = time.perf_counter()
        row = lists.generate_list(
            session, study, kind=ListKind.LIVE, actor=audit.SYSTEM, per_stratum=slots // STRATA
        )
        session.commit()
        elapsed = time.perf_counter() - started
        made = sum(row.params["slots"].values())
        figures: dict[str, Any] = {"slots": made, "seconds": elapsed, "rate": made / elapsed}
        if mode == "tracemalloc":
            figures["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        if mode == "seal":
            cipher = lists.SlotCipher(session, study, row)
            figures["raw_rate"] = _raw_aes_gcm(cipher.aad("S2|grade=high", made // STRATA), made)
        session.rollback()
    figures["peak_rss_mib"] = _peak_rss_mib()
    return figures


def _raw_aes_gcm(aad: bytes, count: int) -> float:
    """Seals per second of arm-sized payloads with slot-sized associated data, nothing else."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    payloads = [b"ACTIVE", b"PLACEBO"]
    encrypt, urandom = aead.encrypt, os.urandom
    started = time.perf_counter()
    for i in range(count):
        nonce = urandom(12)
        _ = nonce + encrypt(nonce, payloads[i & 1], aad)
    return count / (time.perf_counter() - started)


def _run(mode: str, slots: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--slots", str(slots)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return (
        f"machine: {os.cpu_count()} cores, {model}; {platform.system()} {platform.release()}\n"
        f"python {platform.python_version()}, cryptography {cryptography.__version__} "
        f"({backend.openssl_version_text()}), SQLite {sqlite3.sqlite_version}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["seal", "sqlite", "tracemalloc"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.slots)))
        return
    print(_machine())
    lengths = [args.slots // 10, args.slots]
    print(f"list: {STRATA} strata, arms 1:1, block sizes 2/4/6; lengths {lengths}\n")
    rows = []
    for n in lengths:
        seal, full, traced = _run("seal", n), _run("sqlite", n), _run("tracemalloc", n)
        rows.append((n, seal, full, traced))
        ratio = seal["rate"] / seal["raw_rate"]
        print(f"{seal['slots']:>9,} slots")
        print(f"  generate + seal (no insert): {seal['rate']:>9,.0f} slots/s "
              f"({seal['seconds']:.2f} s), peak RSS {seal['peak_rss_mib']:.0f} MiB")  # fmt: skip
        print(f"  raw AES-GCM, same payloads:  {seal['raw_rate']:>9,.0f} seals/s; "
              f"ratio {ratio:.2f}")  # fmt: skip
        print(f"  full path into SQLite:       {full['rate']:>9,.0f} slots/s "
              f"({full['seconds']:.2f} s), peak RSS {full['peak_rss_mib']:.0f} MiB; "
              f"ratio to raw {full['rate'] / seal['raw_rate']:.2f}")  # fmt: skip
        print(f"  peak Python allocations (tracemalloc, full path): "
              f"{traced['traced_peak_mib']:.1f} MiB")  # fmt: skip
    (small, _, s_full, s_traced), (big, b_seal, b_full, b_traced) = rows
    growth = b_traced["traced_peak_mib"] / max(s_traced["traced_peak_mib"], 1e-9)
    print(f"\nmemory: {big // small}x the slots -> {growth:.2f}x the traced peak, RSS "
          f"{s_full['peak_rss_mib']:.0f} -> {b_full['peak_rss_mib']:.0f} MiB")  # fmt: skip
    ok_rate = b_seal["rate"] >= TARGET_RATE
    ok_ratio = b_seal["rate"] / b_seal["raw_rate"] >= TARGET_RATIO
    print(f"targets: >= {TARGET_RATE:,} slots/s: {'met' if ok_rate else 'NOT met'} "
          f"(full path into SQLite: {'met' if b_full['rate'] >= TARGET_RATE else 'NOT met'}); "
          f"ratio >= {TARGET_RATIO}: {'met' if ok_ratio else 'NOT met'}; "
          f"memory flat: {'yes' if growth < 1.5 else 'NO'}")  # fmt: skip


if __name__ == "__main__":
    main()
