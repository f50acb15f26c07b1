"""Load on the sidecar over its Unix socket, against a plain uvicorn+Starlette floor (issue 6 §7).

Not a test. In one run it starts, each in its own process:

* the sidecar (``depthguard sidecar run --config``; a local store with one secret, a role for our uid),
  timing spawn → first ``200`` from ``/v1/ready`` (start-up to ready);
* the floor: uvicorn (uvloop, httptools, no access log) serving a constant JSON body from a bare
  Starlette route on another Unix socket,

then drives a cached ``GET /v1/secrets/{name}`` with a valid token (keep-alive, 1 and 16 connections)
and the floor's endpoint with the same client, and prints req/s, p50/p99 latency, the sidecar's RSS
after the load, start-up to ready, and the ratio sidecar/floor. Targets: ≥ 8,000 req/s at 16
connections and ≥ 0.5× the floor, p50 ≤ 0.3 ms at 1 connection, p99 ≤ 2 ms, RSS ≤ 80 MB, start-up ≤ 1.5 s.

Client: ``h2load --h1 -B unix:PATH`` (Debian's nghttp2-client) with per-request latencies from its
``--log-file``; without it, a multi-process ``http.client`` generator (which saturates before the
server does: its figures are a lower bound). With two or more CPUs the server is pinned to CPU 0 and
the client to CPU 1 so they do not compete for one core.

    python bench/sidecar_load.py                 # 5 s per measurement
    python bench/sidecar_load.py --duration 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing import Event, Process, Queue
from pathlib import Path
from typing import Any

SECRET_NAME = "db-password"
SECRET_VALUE = b"bench-value-0123456789"

FLOOR = textwrap.dedent("""\
    import os, socket, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    BODY = b'{"name":"db-password","value":"bench-value-0123456789","encoding":"utf-8","version":"1"}'

    async def endpoint(request):
        return Response(BODY, media_type="application/json")

    path = sys.argv[1]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(2048)
    app = Starlette(routes=[Route("/floor", endpoint)])
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", access_log=False,
                            log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
""")


@dataclass
class Result:
    target: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _pin(cpu: int) -> Callable[[], None] | None:
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _request(sock: Path, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    from sidecar.client import UnixHTTPConnection

    conn = UnixHTTPConnection(sock, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait(sock: Path, path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if _request(sock, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"{sock} did not become ready")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ----------------------------------------------------------------------------------------- clients


def run_h2load(sock: Path, path: str, headers: dict[str, str], connections: int, duration: float,
               target: str, workdir: Path) -> Result:
    log = workdir / f"h2load-{target}-{connections}.log"
    cmd = ["h2load", "--h1", "-B", f"unix:{sock}", "-c", str(connections), "-t", "1",
           "-D", str(max(1, round(duration))), "--warm-up-time", "1", "--log-file", str(log)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://localhost{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(1), check=True).stdout
    lat: list[float] = []
    errors = 0
    for line in log.read_text().splitlines():  # start time, status, duration (µs)
        parts = line.split()
        if len(parts) >= 3:
            if parts[1] != "200":
                errors += 1
                print(f"{target}, {connections} connection(s): status {parts[1]} after {parts[2]} us",
                      file=sys.stderr)
            lat.append(int(parts[2]) / 1000.0)
    for line in out.splitlines():
        if line.startswith("requests:") and " 0 failed, 0 errored, 0 timeout" not in line:
            print(f"{target}, {connections} connection(s): h2load {line}", file=sys.stderr)
    lat.sort()
    rps = len(lat) / duration
    for line in out.splitlines():
        if line.startswith("finished in"):  # "finished in 5.00s, 12345.67 req/s, 2.03MB/s"
            rps = float(line.split(",")[1].split()[0])
    return Result(target, connections, len(lat), rps, _percentile(lat, 0.5), _percentile(lat, 0.99), errors)


def _py_worker(sock: str, path: str, headers: dict[str, str], stop: Any, q: Any) -> None:
    from sidecar.client import UnixHTTPConnection

    conn = UnixHTTPConnection(sock, timeout=10)
    lat: list[float] = []
    errors = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        lat.append((time.perf_counter() - t0) * 1000)
        errors += resp.status != 200
    q.put((lat, errors))


def run_python(sock: Path, path: str, headers: dict[str, str], connections: int, duration: float,
               target: str, workdir: Path) -> Result:
    stop, q = Event(), Queue()
    procs = [Process(target=_py_worker, args=(str(sock), path, headers, stop, q)) for _ in range(connections)]
    for p in procs:
        p.start()
    time.sleep(duration)
    stop.set()
    lat: list[float] = []
    errors = 0
    for _ in procs:
        part, err = q.get()
        lat += part
        errors += err
    for p in procs:
        p.join()
    lat.sort()
    return Result(target, connections, len(lat), len(lat) / duration, _percentile(lat, 0.5),
                  _percentile(lat, 0.99), errors)


# ----------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--client", choices=["auto", "h2load", "python"], default="auto")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (h2load logs, audit file, sidecar log) and print its path")
    args = ap.parse_args()

    use_h2load = args.client == "h2load" or (args.client == "auto" and shutil.which("h2load"))
    run = run_h2load if use_h2load else run_python
    work = Path(tempfile.mkdtemp(prefix="dg-bench-"))
    work.chmod(0o700)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from broker.backends.local import LocalStore, resolve_key

        store_dir = work / "store"
        store_dir.mkdir(mode=0o700)
        key = resolve_key(store_dir, None, {}, create=True).key
        LocalStore(store_dir, key).put(SECRET_NAME, SECRET_VALUE)
        sock = work / "sidecar.sock"
        config = {
            "listen": {"socket": str(sock)},
            "backends": {"local": {"type": "local", "path": str(store_dir)}},
            "secrets": {SECRET_NAME: {"ref": f"local:{SECRET_NAME}", "refresh": "1h"}},
            "roles": {"bench": {"uids": [os.getuid()], "secrets": [SECRET_NAME]}},
            "audit": {"file": str(work / "audit.jsonl")},
            "limits": {"auth_failures_per_minute": 1000000},
        }
        (work / "sidecar.yaml").write_text(json.dumps(config))

        t0 = time.monotonic()
        with open(work / "sidecar.log", "wb") as log:
            sidecar = subprocess.Popen([sys.executable, "-m", "depthguard", "sidecar", "run", "--config",
                                        str(work / "sidecar.yaml")], preexec_fn=_pin(0),
                                       stdout=subprocess.DEVNULL, stderr=log)
        procs.append(sidecar)
        _wait(sock, "/v1/ready", sidecar)
        startup = time.monotonic() - t0

        floor_sock = work / "floor.sock"
        floor = subprocess.Popen([sys.executable, "-c", FLOOR, str(floor_sock)], preexec_fn=_pin(0),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(floor)
        _wait(floor_sock, "/floor", floor)

        from sidecar.client import SidecarClient

        client = SidecarClient(sock)
        token = client.token()
        assert client.get(SECRET_NAME) == SECRET_VALUE  # warm the cache
        auth = {"authorization": f"Bearer {token}"}

        results: list[Result] = []
        for conns in (1, 16):
            path = f"/v1/secrets/{SECRET_NAME}"
            results.append(run(sock, path, auth, conns, args.duration, "sidecar", work))
            results.append(run(floor_sock, "/floor", {}, conns, args.duration, "floor", work))
        rss = _rss_mb(sidecar.pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    by = {(r.target, r.connections): r for r in results}
    ratio16 = by[("sidecar", 16)].rps / by[("floor", 16)].rps
    checks = {
        "rps_16 >= 8000": by[("sidecar", 16)].rps >= 8000,
        "rps_16 >= 0.5 x floor": ratio16 >= 0.5,
        "p50_1 <= 0.3 ms": by[("sidecar", 1)].p50_ms <= 0.3,
        "p99 <= 2 ms at 1 connection": by[("sidecar", 1)].p99_ms <= 2.0,
        "p99 <= 2 ms at 16 connections": by[("sidecar", 16)].p99_ms <= 2.0,
        "rss <= 80 MB": rss <= 80,
        "startup <= 1.5 s": startup <= 1.5,
    }
    if args.json:
        print(json.dumps({"client": "h2load" if use_h2load else "python",
                          "results": [asdict(r) for r in results], "rss_mb": rss, "startup_s": startup,
                          "ratio_16": ratio16, "checks": checks}, indent=2))
    else:
        print(f"client: {'h2load --h1 (pinned to CPU 1)' if use_h2load else 'python http.client processes'}"
              f", {args.duration:g} s per run, {os.cpu_count()} CPUs")
        print(f"{'target':8} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
        for r in results:
            print(f"{r.target:8} {r.connections:5d} {r.rps:9.0f} {r.p50_ms:7.3f} {r.p99_ms:7.3f}"
                  f" {r.errors:6d}")
        print(f"ratio sidecar/floor: {by[('sidecar', 1)].rps / by[('floor', 1)].rps:.2f} at 1 connection, "
              f"{ratio16:.2f} at 16")
        print(f"sidecar RSS after load: {rss:.1f} MB; start-up to ready: {startup:.3f} s")
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'MISS'}] {name}")
    errors = sum(r.errors for r in results)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
