"""Which HTTP stack the gateway API should serve on, measured (issue 12): the API's hot
route, the balance check, in aiohttp (what the API uses), Starlette on uvicorn, and FastAPI
on uvicorn (uvicorn with uvloop and httptools, its fastest setup), each in a process of its
own, driven by vegeta at a fixed rate and then as fast as it answers.

The route is the same in each: a bearer token compared in constant time, the user id parsed
(400 if malformed), the balance looked up in memory among 10,000 users (404 if unknown),
a JSON answer. No database: PostgreSQL's share of a check is the same under any framework,
and left out it cannot hide the framework's own cost.

Rerun (a quiet machine; vegeta as `bench api` installs it):
    pip install 'starlette==1.10.0' 'uvicorn[standard]==0.54.0' 'fastapi==0.163.2'
    python docs/spikes/api_frameworks.py [ROUNDS]
It prints, per framework, medians over the rounds (the frameworks alternate within each
round): the server's CPU per request at 1,000 requests/s, p50/p99 there, and the most
requests/s it answered with 64 requests in flight.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from pipeline.ops.bench.vegeta import binary as vegeta_binary

TOKEN = "upk_spike-token"
USERS = [uuid.UUID(int=random.Random(1).getrandbits(128) | (4 << 76)) for _ in range(10_000)]
BALANCES = {u: 1000 + i for i, u in enumerate(USERS)}
FRAMEWORKS = ("aiohttp", "starlette", "fastapi")


def _answer(header: str | None, raw: str) -> tuple[int, dict[str, object]]:
    if header is None or not hmac.compare_digest(header.encode(), f"Bearer {TOKEN}".encode()):
        return 401, {"title": "unauthorized"}
    try:
        user = uuid.UUID(raw)
    except ValueError:
        return 400, {"title": "malformed user id"}
    balance = BALANCES.get(user)
    if balance is None:
        return 404, {"title": "unknown user"}
    return 200, {"user_id": raw, "balance": balance, "status": "ok", "as_of": time.time()}


def serve(framework: str, port: int) -> None:
    if framework == "aiohttp":
        import uvloop
        from aiohttp import web

        async def balance(request: web.Request) -> web.Response:
            status, body = _answer(
                request.headers.get("Authorization"), request.match_info["user_id"]
            )
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/v1/users/{user_id}/balance", balance)
        web.run_app(
            app,
            host="127.0.0.1",
            port=port,
            print=None,
            access_log=None,
            loop=uvloop.new_event_loop(),
        )
        return
    import uvicorn

    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def balance_s(request: Request) -> JSONResponse:
            status, body = _answer(
                request.headers.get("authorization"), request.path_params["user_id"]
            )
            return JSONResponse(body, status_code=status)

        asgi = Starlette(routes=[Route("/v1/users/{user_id}/balance", balance_s)])
    else:
        from fastapi import FastAPI, Header
        from fastapi.responses import JSONResponse as FastJSON

        asgi = FastAPI()

        @asgi.get("/v1/users/{user_id}/balance")
        async def balance_f(user_id: str, authorization: str | None = Header(None)) -> FastJSON:
            status, body = _answer(authorization, user_id)
            return FastJSON(body, status_code=status)

    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vegeta(binary: str, targets: Path, rate: str, seconds: int, workers: int) -> dict:
    out = targets.with_suffix(".bin")
    subprocess.run(
        [
            binary,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={rate}",
            f"-duration={seconds}s",
            f"-max-workers={workers}",
            f"-workers={workers}",
            "-max-body=0",
            f"-output={out}",
        ],
        check=True,
    )
    report = subprocess.run(
        [binary, "report", "-type=json", str(out)], check=True, capture_output=True, text=True
    )
    return json.loads(report.stdout)


def one(framework: str, binary: str, work: Path) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", framework, str(port)])
    base = f"http://127.0.0.1:{port}/v1/users/"
    targets = work / "targets"
    rng = random.Random(7)
    targets.write_text(
        "".join(
            json.dumps(
                {
                    "method": "GET",
                    "url": f"{base}{rng.choice(USERS)}/balance",
                    "header": {"Authorization": [f"Bearer {TOKEN}"]},
                }
            )
            + "\n"
            for _ in range(20_000)
        )
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"{base}{USERS[0]}/balance", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                urllib.request.urlopen(request, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        vegeta(binary, targets, "500/1s", 2, 64)  # warm-up
        before = cpu_seconds(server.pid)
        fixed = vegeta(binary, targets, "1000/1s", 10, 1000)
        used = cpu_seconds(server.pid) - before
        most = vegeta(binary, targets, "0", 5, 64)
    finally:
        server.terminate()
        server.wait(10)
    assert fixed["status_codes"] == {"200": fixed["requests"]}, fixed["status_codes"]
    return {
        "cpu_us_per_request": 1e6 * used / fixed["requests"],
        "p50_ms": fixed["latencies"]["50th"] / 1e6,
        "p99_ms": fixed["latencies"]["99th"] / 1e6,
        "max_rps": most["throughput"],
    }


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    binary = str(vegeta_binary())
    figures: dict[str, list[dict[str, float]]] = {f: [] for f in FRAMEWORKS}
    with tempfile.TemporaryDirectory() as work:
        for n in range(rounds):
            for framework in FRAMEWORKS:
                figures[framework].append(one(framework, binary, Path(work)))
                print(
                    n + 1,
                    framework,
                    {k: round(v, 2) for k, v in figures[framework][-1].items()},
                    flush=True,
                )
    print(f"medians of {rounds} rounds:")
    for framework, runs in figures.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"  {framework:10} CPU {med['cpu_us_per_request']:6.1f} us/request at 1,000/s, "
            f"p50 {med['p50_ms']:.2f} ms, p99 {med['p99_ms']:.2f} ms; "
            f"at most {med['max_rps']:,.0f} requests/s"
        )


if __name__ == "__main__":
    main()
