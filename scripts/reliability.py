#!/usr/bin/env python3
"""Fault test (``make test-reliability``): randomize under SIGKILLed workers and PostgreSQL
restarts, then check that nothing was lost, doubled or stuck.

On a private PostgreSQL cluster it creates on a free port of 127.0.0.1 (and removes), two
gunicorn instances (4 and 2 workers, one database) serve 16 clients that register,
randomize and dispense, each call retried with its Idempotency-Key until it is answered,
as a real client would. Meanwhile a worker of the first instance is SIGKILLed every 2 s and
PostgreSQL is restarted twice in immediate mode. Then it prints the figures and asserts:
every 201 has exactly one allocation and its audit event, no slot or kit is shared, the
used slots of each stratum leave no gap, 5xx answers are 503 and only during an outage,
no call is refused as "in progress" 10 s after the faults ended, the audit chain verifies,
and a signature throttle reached through one instance holds on the other.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BIN = Path(sys.executable).parent
PASSWORD = "reliability-pass-123"
CLIENTS, KILLS, KILL_EVERY, RESTART_AT = 16, 20, 2.0, (10.0, 26.0)
ANSWER_DEADLINE = 90.0  # seconds a client keeps retrying one call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*cmd: str | Path, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], env=env, input=stdin, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done.stdout


class Cluster:
    """A throw-away PostgreSQL cluster listening on 127.0.0.1 only (run as the postgres user
    when this script runs as root, which PostgreSQL refuses)."""

    def __init__(self, root: Path) -> None:
        home = root / "pg"
        home.mkdir()
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            root.chmod(0o711)
            shutil.chown(home, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = home / "data", free_port()
        run(*self.as_owner, PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
            "-E", "UTF8")  # fmt: skip
        self.options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {home}"
        self.log = home / "postgresql.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/randomizer"

    def _ctl(self, *args: str, check: bool = True) -> None:
        cmd = [*self.as_owner, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", self.options,
               "-l", str(self.log), "-w", *args]  # fmt: skip
        if check:
            run(*cmd)
        else:
            subprocess.run(cmd, capture_output=True, check=False, timeout=60)

    def start(self) -> None:
        self._ctl("start")
        run(*self.as_owner, PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "randomizer")  # fmt: skip

    def restart_immediately(self) -> None:
        self._ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop", check=False)


class Gunicorn:
    """One gunicorn instance with the repository's configuration."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        env = {**env, "RANDOMIZER_BIND": f"127.0.0.1:{self.port}",
               "RANDOMIZER_WORKERS": str(workers)}  # fmt: skip
        log = Path(env["RANDOMIZER_INSTANCE_PATH"]) / f"gunicorn-{self.port}.log"
        with log.open("w") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [BIN / "gunicorn", "-c", ROOT / "gunicorn.conf.py", "--access-logfile", "-"],
                env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(self.workers()) < workers or not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"gunicorn on port {self.port} did not start")
            time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            return request(self.port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def kill_a_worker(self) -> bool:
        pids = self.workers()
        if not pids:
            return False
        os.kill(random.choice(pids), signal.SIGKILL)
        return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def request(port: int, method: str, path: str, token: str | None = None,
            body: Any = None, key: str | None = None) -> tuple[int, Any]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw or b"null")
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


@dataclass
class Record:
    """What the clients saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    connection_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[tuple[float, int]] = field(default_factory=list)
    in_flight: list[float] = field(default_factory=list)
    randomized: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    dispensed: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    unanswered: int = 0


def answered(record: Record, ports: list[int], method: str, path: str, token: str,
             body: Any) -> tuple[int, Any] | None:  # fmt: skip
    """Send the call until it is answered (not 5xx, not a dropped connection), same key."""
    key, deadline = str(uuid.uuid4()), time.monotonic() + ANSWER_DEADLINE
    while time.monotonic() < deadline:
        port = random.choice(ports)
        with record.lock:
            record.requests += 1
        try:
            status, answer = request(port, method, path, token, body, key)
        except OSError:
            with record.lock:
                record.connection_errors += 1
            time.sleep(0.2)
            continue
        with record.lock:
            record.statuses[status] += 1
            if status >= 500:
                record.server_errors.append((time.monotonic(), status))
            if status == 409 and "in-flight" in str(answer):
                record.in_flight.append(time.monotonic())
        if status < 500 and not (status == 409 and "in-flight" in str(answer)):
            return status, answer
        time.sleep(0.5)
    with record.lock:
        record.unanswered += 1
    return None


def client(n: int, record: Record, ports: list[int], token: str, stop: threading.Event) -> None:
    signature = {"password": PASSWORD}
    i = 0
    while not stop.is_set():
        i += 1
        body = {"site": random.choice(["S1", "S2"]), "screening_number": f"C{n}-{i}",
                "factors": {"grade": random.choice(["low", "high"])},
                "eligibility": {"consent": True, "age": 40, "pregnant": False}}  # fmt: skip
        got = answered(record, ports, "POST", "/api/v1/studies/TST/participants", token, body)
        if got is None or got[0] != 201:
            continue
        pid = got[1]["participant_id"]
        path = f"/api/v1/participants/{pid}"
        got = answered(record, ports, "POST", path + "/randomize", token,
                       {"signature": signature})  # fmt: skip
        if got is None or got[0] != 201:
            continue
        with record.lock:
            record.randomized.append((pid, got[1]))
        got = answered(record, ports, "POST", path + "/dispense", token, {
            "visit": "month_6", "override_reason": "reliability test", "signature": signature,
        })  # fmt: skip
        if got is not None and got[0] == 201:
            with record.lock:
                record.dispensed.append((pid, got[1]))


def faults(cluster: Cluster, web: Gunicorn, outages: list[tuple[float, float]],
           counts: Counter[str]) -> None:  # fmt: skip
    start = time.monotonic()
    restarts = list(RESTART_AT)
    while counts["kills"] < KILLS:
        if restarts and time.monotonic() - start >= restarts[0]:
            restarts.pop(0)
            began = time.monotonic()
            cluster.restart_immediately()
            outages.append((began, time.monotonic()))
            counts["restarts"] += 1
        if web.kill_a_worker():
            counts["kills"] += 1
        time.sleep(KILL_EVERY)


def setup(env: dict[str, str]) -> tuple[str, str]:
    from tests.conftest import SMALL_STUDY

    randomizer = BIN / "randomizer"
    run(randomizer, "init", env=env)
    study = Path(env["RANDOMIZER_INSTANCE_PATH"]) / "study.toml"
    study.write_text(SMALL_STUDY, encoding="utf-8")
    run(randomizer, "study", "load", study, env=env)
    run(randomizer, "list", "generate", "TST", "--dummy", "--per-stratum", "400", env=env)
    for site in ("S1", "S2"):
        run(randomizer, "kits", "generate", "TST", "--count", "1200", "--site", site, env=env)
    tokens = []
    for name in ("inv", "guesser"):
        run(randomizer, "user", "add", name, "--role", "investigator", "--site", "S1",
            "--site", "S2", "--password-stdin", env=env, stdin=PASSWORD + "\n")  # fmt: skip
        tokens.append(run(randomizer, "token", "create", name, env=env).strip().splitlines()[-1])
    return tokens[0], tokens[1]


def throttle_is_shared(env: dict[str, str], first: Gunicorn, second: Gunicorn,
                       token: str) -> bool:  # fmt: skip
    """Wrong signatures through one instance pause signing on the other."""
    body = {"site": "S1", "screening_number": "GUESS-1", "factors": {"grade": "low"},
            "eligibility": {"consent": True, "age": 40, "pregnant": False}}  # fmt: skip
    pid = request(first.port, "POST", "/api/v1/studies/TST/participants", token, body)[1][
        "participant_id"
    ]
    path = f"/api/v1/participants/{pid}/randomize"
    for _ in range(5):
        wrong = {"signature": {"password": "wrong-guess-000"}}
        request(first.port, "POST", path, token, wrong, str(uuid.uuid4()))
    status, answer = request(second.port, "POST", path, token,
                             {"signature": {"password": PASSWORD}}, str(uuid.uuid4()))  # fmt: skip
    return status == 401 and "Too many" in str(answer)


def check_database(url: str, record: Record) -> list[str]:
    """The invariants, read from the database; a list of what is wrong."""
    import sqlalchemy as sa

    problems = []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        used = conn.execute(sa.text(
            "SELECT participant_id, stratum, sequence, randomization_number FROM allocation_slot"
            " WHERE participant_id IS NOT NULL")).all()  # fmt: skip
        by_participant = Counter(row[0] for row in used)
        randomize_events = sa.text(
            "SELECT participant_id FROM audit_event WHERE action = 'participant.randomize'"
        )
        events = Counter(row[0] for row in conn.execute(randomize_events))
        kits = conn.execute(sa.text(
            "SELECT kit_id, participant_id, visit FROM dispensation")).all()  # fmt: skip
        numbers = {row[0]: row[3] for row in used}
        for pid, answer in record.randomized:
            if by_participant[pid] != 1 or events[pid] != 1:
                problems.append(f"participant {pid}: {by_participant[pid]} slot(s), "
                                f"{events[pid]} randomize event(s)")  # fmt: skip
            elif numbers[pid] != answer["randomization_number"]:
                problems.append(f"participant {pid}: answered number differs from the slot")
        if any(n > 1 for n in Counter(k[0] for k in kits).values()):
            problems.append("a kit is dispensed twice")
        visits = Counter((k[1], k[2]) for k in kits)
        if any(n > 1 for n in visits.values()):
            problems.append("a participant has two kits for one visit")
        strata: dict[str, list[int]] = {}
        for _pid, stratum, sequence, _number in used:
            strata.setdefault(stratum, []).append(sequence)
        for stratum, sequences in strata.items():
            if sorted(sequences) != list(range(1, len(sequences) + 1)):
                problems.append(f"stratum {stratum}: used slots leave a gap")
    engine.dispose()
    return problems


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="randomizer-reliability-"))
    cluster = Cluster(root)
    webs: list[Gunicorn] = []
    try:
        cluster.start()
        env = {**os.environ, "RANDOMIZER_INSTANCE_PATH": str(root / "instance"),
               "RANDOMIZER_DATABASE_URL": cluster.url}  # fmt: skip
        token, guesser = setup(env)
        webs = [Gunicorn(env, 4), Gunicorn(env, 2)]
        shared = throttle_is_shared(env, webs[0], webs[1], guesser)
        record, outages, counts, stop = Record(), [], Counter[str](), threading.Event()
        ports = [w.port for w in webs]
        clients = [threading.Thread(target=client, args=(n, record, ports, token, stop))
                   for n in range(CLIENTS)]  # fmt: skip
        for thread in clients:
            thread.start()
        faults(cluster, webs[0], outages, counts)
        faults_ended = time.monotonic()
        time.sleep(12)  # calls after the faults must be answered at once
        stop.set()
        for thread in clients:
            thread.join(ANSWER_DEADLINE + 30)
        verify = subprocess.run([BIN / "randomizer", "audit", "verify"], env=env,
                                capture_output=True, text=True, check=False)  # fmt: skip
        problems = check_database(cluster.url, record)
    finally:
        for web in webs:
            web.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    grace = 3.0
    outside = [(t, s) for t, s in record.server_errors
               if s != 503 or not any(a <= t <= b + grace for a, b in outages)]  # fmt: skip
    stuck = [t for t in record.in_flight if t > faults_ended + 10]
    print(f"reliability: kills {counts['kills']}, PostgreSQL restarts {counts['restarts']}, "
          f"requests {record.requests}, connection errors {record.connection_errors}, "
          f"5xx {len(record.server_errors)} ({dict(Counter(s for _, s in record.server_errors))}"
          f", {len(outside)} outside an outage), 'in progress' refusals {len(record.in_flight)} "
          f"({len(stuck)} later than 10 s after the faults), unanswered calls "
          f"{record.unanswered}, randomized {len(record.randomized)}, dispensed "
          f"{len(record.dispensed)}, statuses {dict(sorted(record.statuses.items()))}")  # fmt: skip
    print(f"audit verify: {verify.stdout.strip() or verify.stderr.strip()}")
    print(f"signature throttle shared between the two instances: {shared}")
    failures = problems + [f"5xx outside an outage: {outside[:5]}"] * bool(outside)
    failures += ["'in progress' refusals 10 s after the faults"] * bool(stuck)
    failures += [f"{record.unanswered} call(s) never answered"] * bool(record.unanswered)
    failures += ["audit chain does not verify"] * (verify.returncode != 0)
    failures += ["throttle not shared between instances"] * (not shared)
    failures += ["no randomization got through"] * (not record.randomized)
    failures += [f"only {counts['restarts']} restart(s)"] * (counts["restarts"] < 2)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("reliability: ok" if not failures else "reliability: FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
