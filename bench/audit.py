#!/usr/bin/env python3
"""Audit chain verification speed and memory, against the raw HMAC-SHA256 rate.

Builds chains of 1,000,000 (and, for the memory comparison, 100,000) events in SQLite
files — rows generated directly with the audit module's ``canonical`` and ``chain_digest``
and inserted with ``executemany`` — then verifies each through ``audit.verify``, the path
``randomizer audit verify`` takes. In the same run it times HMAC-SHA256 alone over the same
message bytes — both as one-shot ``hmac.digest`` and by copying a keyed HMAC state, the
faster of which is the reference — and prints events per second, the ratio (target >= 0.3),
and the peak memory of verification at both lengths (target: flat).

Rates are given in wall time and in this process's CPU time (user + system). The ratio uses
CPU time: on a shared machine other processes take wall time from both measurements
unevenly, while the CPU time of each is what the work itself costs (SQLite runs in-process,
so its work is counted).

    .venv/bin/python bench/audit.py [--events N] [--small N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import os
import platform
import secrets
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.db import Base

INSERT_BATCH = 50_000
HMAC_CHUNK = 100_000
COLUMNS = (
    "seq, occurred_at, actor, role, action, object_type, object_id, study_code, "
    "participant_id, old_values, new_values, reason, prev_digest, digest"
)
ACTIONS = (
    ("investigator", "inv1", "participant.randomize", "participant"),
    ("pharmacist", "pharm1", "kit.dispense", "kit"),
    ("admin", "admin1", "shipment.dispatch", "shipment"),
    ("investigator", "inv2", "participant.register", "participant"),
    ("statistician", "stat1", "list.export", "allocation_list"),
)


def machine() -> str:
    """Cores, CPU model, Python and SQLite versions."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def content(seq: int, start: dt.datetime) -> tuple[Any, ...]:
    """Plausible event content: varied actors, actions and JSON values (~250 bytes)."""
    role, actor, action, object_type = ACTIONS[seq % len(ACTIONS)]
    pid = seq // 3 + 1
    new = audit.canonical_json(
        {
            "randomization_number": f"R{seq % 97:02d}-{seq % 10_000:04d}",
            "kit_code": f"K{seq * 7919 % 1_000_003:07d}",
            "site": "CUA" if seq % 2 else "HBLT",
            "visit": "baseline",
        }
    )
    old = audit.canonical_json({"status": "available"}) if seq % 4 == 0 else None
    return (
        seq,
        audit.timestamp(start + dt.timedelta(milliseconds=seq)),
        actor,
        role,
        action,
        object_type,
        str(seq),
        "MSC-LN-2B",
        pid,
        old,
        new,
        "damaged in transit" if seq % 50 == 0 else None,
    )


def build(path: Path, events: int, key: bytes) -> float:
    """Create the schema and a valid chain of ``events`` events; returns seconds taken."""
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    prev = audit.GENESIS
    batch: list[tuple[Any, ...]] = []
    sql = f"INSERT INTO audit_event ({COLUMNS}) VALUES ({', '.join('?' * 14)})"
    for seq in range(1, events + 1):
        row = content(seq, start)
        digest = audit.chain_digest(key, prev, audit.canonical(row))
        batch.append((*row, prev, digest))
        prev = digest
        if len(batch) >= INSERT_BATCH:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    conn.execute("DELETE FROM audit_head")
    conn.execute("INSERT INTO audit_head (id, seq, digest) VALUES (1, ?, ?)", (events, prev))
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def verify(path: Path, key: bytes) -> tuple[audit.Verification, float, float]:
    """Run ``audit.verify`` on the chain; returns the result, wall and CPU seconds."""
    engine = sa.create_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        wall, cpu = time.perf_counter(), time.process_time()
        result = audit.verify(session, key)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    engine.dispose()
    return result, wall, cpu


def messages(path: Path) -> Iterator[list[bytes]]:
    """The exact HMAC inputs (prev_digest || canonical content), in chunks."""
    conn = sqlite3.connect(path)
    cursor = conn.execute(f"SELECT {COLUMNS} FROM audit_event ORDER BY seq")
    while rows := cursor.fetchmany(HMAC_CHUNK):
        yield [r[12].encode("ascii") + audit.canonical(r[:12]) for r in rows]
    conn.close()


def raw_hmac_rates(path: Path, key: bytes) -> tuple[float, float, int]:
    """HMAC-SHA256 alone over the same bytes, in CPU time: (one-shot rate, keyed-copy rate,
    total bytes)."""
    one_shot = copied = 0.0
    count = size = 0
    digest, keyed = hmac.digest, hmac.new(key, digestmod=hashlib.sha256).copy
    for chunk in messages(path):
        started = time.process_time()
        for message in chunk:
            digest(key, message, "sha256")
        one_shot += time.process_time() - started
        started = time.process_time()
        for message in chunk:
            mac = keyed()
            mac.update(message)
            mac.digest()
        copied += time.process_time() - started
        count += len(chunk)
        size += sum(len(m) for m in chunk)
    return count / one_shot, count / copied, size


def peak_memory(path: Path, key: bytes) -> int:
    """Peak Python heap (bytes) allocated while verifying, measured with tracemalloc."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result, _, _ = verify(path, key)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert result.ok, result.message()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the chains in this folder and keep them")
    args = parser.parse_args()
    key = secrets.token_bytes(32)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    big, small = folder / f"chain-{args.events}.sqlite3", folder / f"chain-{args.small}.sqlite3"
    for p in (big, small):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)

    print(f"machine: {machine()}")
    print(f"building {args.events:,} events ...", flush=True)
    print(f"  built in {build(big, args.events, key):.1f} s ({big.stat().st_size / 2**20:.0f} MiB)")
    build(small, args.small, key)

    result, wall, cpu = verify(big, key)
    assert result.ok, result.message()
    one_shot, copied, size = raw_hmac_rates(big, key)
    rate, raw = args.events / cpu, max(one_shot, copied)
    print(
        f"audit.verify: {args.events:,} events in {wall:.2f} s wall = "
        f"{args.events / wall:,.0f} events/s; {cpu:.2f} s CPU = {rate:,.0f} events/s"
    )
    print(
        f"raw HMAC-SHA256 over the same bytes ({size / args.events:.0f} B/event, CPU time): "
        f"one-shot {one_shot:,.0f}/s, keyed copy {copied:,.0f}/s"
    )
    ratio = rate / raw
    verdict = "met" if ratio >= 0.3 else "MISSED"
    print(
        f"ratio verify / fastest raw HMAC: {ratio:.2f} (target >= 0.30: {verdict}); "
        f"vs one-shot: {rate / one_shot:.2f}"
    )

    peak_small, peak_big = peak_memory(small, key), peak_memory(big, key)
    print(
        f"peak memory while verifying (tracemalloc): {args.small:,} events "
        f"{peak_small / 2**20:.2f} MiB, {args.events:,} events {peak_big / 2**20:.2f} MiB "
        f"(x{peak_big / peak_small:.2f} for x{args.events / args.small:.0f} the events)"
    )
    if not args.keep:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
