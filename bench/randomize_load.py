"""Benchmark: randomizations under load, against the database's own ceiling.

Starts gunicorn on a fresh PostgreSQL database (127.0.0.1:5432, user postgres), loads a
study with two sites and long lists, registers N participants and randomizes them from
16 concurrent clients through the JSON API. Prints:

* randomizations/s and latency p50/p95/p99, errors, and the invariants checked after the
  run (no slot or kit shared, no gap, exactly one ``participant.randomize`` event each);
* two anchors measured in the same run: ``pgbench -N`` TPS, and a pgbench custom script
  doing the statements one randomization does (row locks on the participant, the stratum,
  the site's stock and a kit, the updates and inserts, the audit head) — the database's
  own ceiling for this work — with the ratios;
* single-client latency with 100, 1,000 and 10,000 kits per site;
* a small site's p50 alone, and while a big site (10,000 kits) is busy;
* in-process on SQLite: register + randomize operations/s (no HTTP), for the comparison
  with clinicedc edc-randomization's 5.6/s measured on this machine earlier.

``--profile bench`` (default) hashes passwords with the cheapest Argon2id, to measure the
transactional core apart from the KDF; ``--profile production`` uses the real one. Only
instances marked as benchmark instances accept the bench profile.
Run: ``python bench/randomize_load.py [--participants N] [--profile P]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
PASSWORD = "bench-password-long-enough"
CLIENTS = 16
VENV_BIN = Path(sys.executable).parent

STUDY = """
[study]
code = "LOAD"
title = "Load benchmark"
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
block_sizes = [2, 4]
per_stratum = 3000
stratify_by_site = true

[[factors]]
code = "grade"
name = "Grade"
levels = ["low", "high"]

[[sites]]
code = "BIG"
name = "Big site"
trigger_level = 2
resupply_level = 6

[[sites]]
code = "SMALL"
name = "Small site"
trigger_level = 2
resupply_level = 6

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


# --- set-up ---------------------------------------------------------------------------------


def _psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qc", sql],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def instance(profile: str) -> Iterator[dict[str, str]]:
    """A fresh database and instance folder; the environment to run the app with."""
    name = f"randomizer_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    _psql(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "RANDOMIZER_INSTANCE_PATH": str(folder / "instance"),
        "RANDOMIZER_DATABASE_URL": f"{PG}/{name}",
        "RANDOMIZER_PASSWORD_PROFILE": profile,
    }
    try:
        (folder / "instance").mkdir(mode=0o700)
        (folder / "instance" / "benchmark-instance").write_text("bench/randomize_load.py\n")
        done = subprocess.run([VENV_BIN / "randomizer", "init"], env=env, capture_output=True)
        if done.returncode:
            raise RuntimeError(f"randomizer init failed: {done.stderr.decode()[-2000:]}")
        yield env | {"DBNAME": name}
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)


def _in_app(env: dict[str, str]) -> Any:
    os.environ.update({k: v for k, v in env.items() if k.startswith("RANDOMIZER_")})
    from randomizer import create_app

    return create_app()


def prepare(env: dict[str, str], *, per_site: dict[str, int], kits: dict[str, int]) -> dict:
    """Study, users, list, kits and registered participants; returns ids and tokens."""
    from randomizer import audit
    from randomizer.db import db
    from randomizer.models import ListKind, Role
    from randomizer.services import enrollment
    from randomizer.services.kits import generate_kits
    from randomizer.services.lists import generate_list
    from randomizer.services.studies import load_study
    from randomizer.services.users import actor_of, create_token, create_user

    app = _in_app(env)
    with app.app_context():
        session = db.session()
        study, _ = load_study(session, text=STUDY, filename="load.toml")
        user = create_user(
            session,
            username="inv",
            role=Role.INVESTIGATOR,
            password=PASSWORD,
            sites=tuple(per_site),
        )
        generate_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM)
        for site, n in kits.items():
            generate_kits(session, study, count=n, site=site, actor=audit.SYSTEM)
        generate_kits(session, study, count=2000, actor=audit.SYSTEM)
        token = create_token(session, user)
        session.commit()
        ids: dict[str, list[int]] = {}
        for site, n in per_site.items():
            for k in range(n):
                p = enrollment.register_participant(
                    session,
                    study,
                    site=site,
                    screening_number=f"{site}-{k}",
                    factors={"grade": ("low", "high")[k % 2]},
                    eligibility={"consent": True},
                    actor=actor_of(user),
                )
                ids.setdefault(site, []).append(p.id)
            session.commit()
        db.engine.dispose()
    return {"token": token, "ids": ids}


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            VENV_BIN / "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "randomizer:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --- clients --------------------------------------------------------------------------------


def _randomize(conn: http.client.HTTPConnection, token: str, pid: int) -> tuple[int, float]:
    body = json.dumps({"signature": {"password": PASSWORD}})
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    start = time.perf_counter()
    conn.request("POST", f"/api/v1/participants/{pid}/randomize", body, headers)
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - start


def drive(port: int, token: str, ids: list[int], clients: int) -> dict[str, Any]:
    """Randomize ``ids`` from ``clients`` threads; latencies and statuses."""
    queue = list(ids)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                pid = queue.pop()
            status, took = _randomize(conn, token, pid)
            with lock:
                latencies.append(took)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"rate": len(latencies) / elapsed, "statuses": statuses, **_percentiles(latencies)}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values) * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000}


def check_invariants(env: dict[str, str]) -> str:
    """No shared slot or kit, no gap, one randomize event per randomized participant."""
    import sqlalchemy as sa

    engine = sa.create_engine(env["RANDOMIZER_DATABASE_URL"])
    with engine.connect() as c:
        randomized = c.execute(
            sa.text("SELECT count(*) FROM participant WHERE status = 'randomized'")
        ).scalar_one()
        events = c.execute(
            sa.text("SELECT count(*) FROM audit_event WHERE action = 'participant.randomize'")
        ).scalar_one()
        slots = c.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT participant_id) FROM allocation_slot "
                "WHERE status = 'used'"
            )
        ).one()
        kits = c.execute(sa.text("SELECT count(*), count(DISTINCT kit_id) FROM dispensation")).one()
        gaps = c.execute(
            sa.text(
                "SELECT count(*) FROM allocation_slot a WHERE a.status = 'available' AND EXISTS "
                "(SELECT 1 FROM allocation_slot b WHERE b.list_id = a.list_id AND "
                "b.stratum = a.stratum AND b.status = 'used' AND b.sequence > a.sequence)"
            )
        ).scalar_one()
    engine.dispose()
    ok = randomized == events == slots[0] == slots[1] == kits[0] == kits[1] and gaps == 0
    return (
        f"{'ok' if ok else 'BROKEN'}: {randomized} randomized, {events} events, "
        f"{slots[0]} slots ({slots[1]} distinct), {kits[0]} kits ({kits[1]} distinct), "
        f"{gaps} gaps"
    )


# --- anchors ----------------------------------------------------------------------------------

SAME_SQL = """
\\set p random(1, 100000)
\\set k random(1, 100000)
\\set site random(1, 2)
BEGIN;
SELECT id, status FROM b_participant WHERE id = :p FOR UPDATE;
SELECT id FROM b_stratum WHERE id = :site FOR UPDATE;
SELECT id, sequence FROM b_slot WHERE stratum = :site AND status = 0 ORDER BY sequence LIMIT 1;
SELECT id, sealed FROM b_stock WHERE id = :site FOR UPDATE;
SELECT id, status FROM b_kit WHERE id = :k FOR UPDATE;
SELECT count(*) FROM b_dispensation WHERE participant_id = :p;
UPDATE b_kit SET status = 1 WHERE id = :k;
INSERT INTO b_dispensation (participant_id, kit_id) VALUES (:p, :k);
UPDATE b_stock SET sealed = md5(sealed), consumed = consumed + 1 WHERE id = :site;
UPDATE b_slot SET status = 0 WHERE id = :p;
UPDATE b_participant SET status = 1 WHERE id = :p;
INSERT INTO b_idem (key, body) VALUES (md5(random()::text), 'x');
SELECT seq, digest FROM b_head WHERE id = 1 FOR UPDATE;
INSERT INTO b_event (content) VALUES (md5(random()::text)), (md5(random()::text));
UPDATE b_head SET seq = seq + 2, digest = md5(digest) WHERE id = 1;
END;
"""

SAME_SQL_SCHEMA = """
CREATE TABLE b_participant (id int PRIMARY KEY, status int);
CREATE TABLE b_stratum (id int PRIMARY KEY);
CREATE TABLE b_slot (id int PRIMARY KEY, stratum int, sequence int, status int);
CREATE INDEX ON b_slot (stratum, status, sequence);
CREATE TABLE b_stock (id int PRIMARY KEY, sealed text, consumed int);
CREATE TABLE b_kit (id int PRIMARY KEY, status int);
CREATE TABLE b_dispensation (id serial PRIMARY KEY, participant_id int, kit_id int);
CREATE INDEX ON b_dispensation (participant_id);
CREATE TABLE b_idem (id serial PRIMARY KEY, key text UNIQUE, body text);
CREATE TABLE b_head (id int PRIMARY KEY, seq int, digest text);
CREATE TABLE b_event (id serial PRIMARY KEY, content text);
INSERT INTO b_participant SELECT g, 0 FROM generate_series(1, 100000) g;
INSERT INTO b_stratum VALUES (1), (2);
INSERT INTO b_slot SELECT g, 1 + g % 2, g, 0 FROM generate_series(1, 100000) g;
INSERT INTO b_stock VALUES (1, 'x', 0), (2, 'x', 0);
INSERT INTO b_kit SELECT g, 0 FROM generate_series(1, 100000) g;
INSERT INTO b_head VALUES (1, 0, 'x');
"""


def pgbench_anchors(seconds: int) -> dict[str, float]:
    """TPS of ``pgbench -N`` and of the same-SQL script, 16 clients, on a scratch database."""
    name = f"randomizer_pgbench_{os.getpid()}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        base = [
            "pgbench",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-c",
            str(CLIENTS),
            "-j",
            "2",
            "-T",
            str(seconds),
            name,
        ]
        subprocess.run(
            ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-i", "-s", "10", "-q", name],
            check=True,
            capture_output=True,
        )
        out_n = subprocess.run(
            [*base[:-1], "-N", name], check=True, capture_output=True, text=True
        ).stdout
        _psql(SAME_SQL_SCHEMA, name)
        script = Path(tempfile.mkdtemp()) / "randomize.sql"
        script.write_text(SAME_SQL)
        out_s = subprocess.run(
            [*base[:-1], "-f", str(script), name], check=True, capture_output=True, text=True
        ).stdout
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {"pgbench_N": _tps(out_n), "same_sql": _tps(out_s)}


def _tps(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output: {output[-500:]}")


# --- the scenarios -----------------------------------------------------------------------------


def load_run(profile: str, participants: int, workers: int) -> dict[str, Any]:
    half = participants // 2
    with instance(profile) as env:
        data = prepare(
            env,
            per_site={"BIG": half, "SMALL": participants - half},
            kits={"BIG": 2 * half + 20, "SMALL": 2 * (participants - half) + 20},
        )
        with gunicorn(env, workers) as port:
            ids = [i for site_ids in data["ids"].values() for i in site_ids]
            result = drive(port, data["token"], ids, CLIENTS)
        result["invariants"] = check_invariants(env)
    return result


def kit_scaling(profile: str, workers: int, sizes: list[int], per_size: int) -> dict[int, float]:
    """p50 of one client randomizing ``per_size`` participants at a site of ``n`` kits."""
    out = {}
    for n in sizes:
        with instance(profile) as env:
            data = prepare(env, per_site={"BIG": per_size}, kits={"BIG": n})
            with gunicorn(env, workers) as port:
                result = drive(port, data["token"], data["ids"]["BIG"], 1)
            out[n] = result["p50"]
    return out


def small_site_contention(profile: str, workers: int) -> dict[str, float]:
    """The small site's p50 alone, then while 8 clients randomize at a 10,000-kit site."""
    with instance(profile) as env:
        data = prepare(env, per_site={"BIG": 600, "SMALL": 120}, kits={"BIG": 10_000, "SMALL": 260})
        small = data["ids"]["SMALL"]
        with gunicorn(env, workers) as port:
            alone = drive(port, data["token"], small[:60], 1)["p50"]
            busy: dict[str, Any] = {}
            big = threading.Thread(
                target=lambda: busy.update(drive(port, data["token"], data["ids"]["BIG"], 8))
            )
            big.start()
            time.sleep(0.5)
            during = drive(port, data["token"], small[60:], 1)["p50"]
            big.join()
    return {"alone": alone, "busy": during, "big_rate": busy.get("rate", 0.0)}


def in_process_sqlite(profile: str, n: int) -> float:
    """Register + randomize committed, in one process on SQLite: operations/s."""
    folder = Path(tempfile.mkdtemp(prefix="bench-inproc-"))
    env = {
        "RANDOMIZER_INSTANCE_PATH": str(folder / "instance"),
        "RANDOMIZER_DATABASE_URL": f"sqlite:///{folder / 'bench.sqlite3'}",
        "RANDOMIZER_PASSWORD_PROFILE": profile,
    }
    code = f"""
import os, sys, time
os.environ.update({env!r})
from pathlib import Path
from randomizer.instance import ensure_instance_files
ensure_instance_files(Path(os.environ["RANDOMIZER_INSTANCE_PATH"]))
Path(os.environ["RANDOMIZER_INSTANCE_PATH"], "benchmark-instance").write_text("bench\\n")
from randomizer import audit, create_app, migrate
from randomizer.db import db
from randomizer.models import ListKind, Role
from randomizer.services import enrollment
from randomizer.services.kits import generate_kits
from randomizer.services.lists import generate_list
from randomizer.services.studies import load_study
from randomizer.services.users import actor_of, create_user
app = create_app()
with app.app_context():
    migrate.upgrade(db.engine)
    s = db.session()
    study, _ = load_study(s, text={STUDY!r}, filename="x.toml")
    user = create_user(s, username="inv", role=Role.INVESTIGATOR, password={PASSWORD!r},
                       sites=("BIG",))
    generate_list(s, study, kind=ListKind.DUMMY, actor=audit.SYSTEM)
    generate_kits(s, study, count={2 * n + 20}, site="BIG", actor=audit.SYSTEM)
    s.commit()
    start = time.perf_counter()
    for k in range({n}):
        p = enrollment.register_participant(s, study, site="BIG", screening_number=f"P{{k}}",
            factors={{"grade": "low"}}, eligibility={{"consent": True}}, actor=actor_of(user))
        s.commit()
        enrollment.randomize(s, p, signer=user, password={PASSWORD!r})
        s.commit()
    print({n} / (time.perf_counter() - start))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    shutil.rmtree(folder, ignore_errors=True)
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=1200)
    parser.add_argument("--profile", choices=["bench", "production", "both"], default="both")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--only",
        action="append",
        choices=["load", "kits", "small", "inproc"],
        help="run only these parts (repeatable); the anchors always run with load",
    )
    args = parser.parse_args()
    parts = set(args.only or ["load", "kits", "small", "inproc"])
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}; {CLIENTS} clients, gunicorn -w {args.workers}"
    )
    if "load" in parts:
        run_load(args)
    if "kits" in parts:
        run_kits(args)
    if "small" in parts:
        run_small(args)
    if "inproc" in parts:
        for profile in ("bench", "production"):
            rate = in_process_sqlite(profile, 300)
            print(f"[{profile}] in-process SQLite register+randomize: {rate:.1f} operations/s")


def run_load(args: argparse.Namespace) -> None:
    anchors = pgbench_anchors(args.pgbench_seconds)
    print(
        f"pgbench -N: {anchors['pgbench_N']:.0f} TPS; same-SQL script: "
        f"{anchors['same_sql']:.0f} TPS"
    )
    profiles = ["bench", "production"] if args.profile == "both" else [args.profile]
    for profile in profiles:
        r = load_run(profile, args.participants, args.workers)
        print(
            f"[{profile}] {args.participants} randomizations: {r['rate']:.1f}/s "
            f"(ratio {r['rate'] / anchors['same_sql']:.3f} of same-SQL, "
            f"{r['rate'] / anchors['pgbench_N']:.4f} of pgbench -N); "
            f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms; "
            f"statuses {r['statuses']}; {r['invariants']}"
        )


def run_kits(args: argparse.Namespace) -> None:
    scaling = kit_scaling("bench", args.workers, [100, 1000, 10_000], 40)
    print(
        "[bench] single-client p50 by kits per site: "
        + ", ".join(f"{n:,} kits {ms:.1f} ms" for n, ms in scaling.items())
        + f" (10,000 / 100: {scaling[10_000] / scaling[100]:.2f}x)"
    )


def run_small(args: argparse.Namespace) -> None:
    c = small_site_contention("bench", args.workers)
    print(
        f"[bench] small site p50 alone {c['alone']:.1f} ms, while the big site runs "
        f"({c['big_rate']:.0f}/s) {c['busy']:.1f} ms ({c['busy'] / c['alone']:.2f}x)"
    )


if __name__ == "__main__":
    main()
