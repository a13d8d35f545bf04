"""/predict latency and throughput: Asgard's service against `mlflow models serve`.

Both serve the same registered version (the current champion of $ASGARD_HOME; run
`make demo` first). For 1-row and 100-row bodies, 8 concurrent clients send requests for
--seconds each; prints p50/p99 latency and requests/s per server, the throughput ratio,
and checks that both servers give the same predictions on the same 100 rows.

    .venv/bin/python bench/serve.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start(cmd: list[str], env: dict, health: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited; see {log}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{' '.join(cmd)} did not become healthy; see {log}")


async def load(
    url: str, body: dict, seconds: float, concurrency: int = 8
) -> tuple[list[float], int]:
    """8 keep-alive connections, each sending the next request when the last answered.
    aiohttp: on a 2-core machine the client shares the CPU with the server, so it must be light."""
    import aiohttp

    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    from asgard_assets.models.training import FEATURES, MODEL_NAME
    from asgard_assets.resources import resource
    from asgard_assets.resources.deployer import free_port

    tracking = resource("mlflow_tracking")
    champion = tracking.champion(MODEL_NAME)
    if champion is None:
        raise SystemExit(
            f"no champion model in ASGARD_HOME={os.environ.get('ASGARD_HOME')}: run `make demo` first"
        )
    version = str(champion.version)
    lakehouse = resource("lakehouse")
    rows = lakehouse.query(
        f"SELECT {', '.join(FEATURES)} FROM gold.operator_features ORDER BY operator_id LIMIT 100",
        "gold.operator_features",
    ).df()
    rows = rows.astype("float64").fillna(0.0).to_dict("records")

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking.uri(),
        "ASGARD_MODEL_URI": f"models:/{MODEL_NAME}/{version}",
    }
    logs = Path(os.environ["ASGARD_HOME"]) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    a_port, m_port = free_port(), free_port()
    servers = {
        "asgard": (
            [
                str(bin_dir / "uvicorn"),
                "asgard_assets.serving.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(a_port),
                "--no-access-log",
            ],
            f"http://127.0.0.1:{a_port}",
            lambda batch: {"instances": batch},
            lambda r: r["predictions"],
        ),
        "mlflow models serve": (
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{MODEL_NAME}/{version}",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(m_port),
            ],
            f"http://127.0.0.1:{m_port}",
            lambda batch: {"dataframe_records": batch},
            lambda r: r["predictions"],
        ),
    }
    procs = []
    try:
        for name, (cmd, base, _, _) in servers.items():
            health = f"{base}/health" if name == "asgard" else f"{base}/ping"
            procs.append(start(cmd, env, health, logs / f"{name.split()[0]}.log"))
        predictions = {}
        for name, (_, base, wrap, unwrap) in servers.items():
            predictions[name] = [
                int(p)
                for p in unwrap(
                    httpx.post(
                        f"{base}/invocations" if "mlflow" in name else f"{base}/predict",
                        json=wrap(rows),
                        timeout=30,
                    ).json()
                )
            ]
        same = predictions["asgard"] == predictions["mlflow models serve"]
        print(f"model {MODEL_NAME} v{version}; same predictions on {len(rows)} rows: {same}")
        print(
            f"{'server':<22}{'rows':>5}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        )
        results = {}
        for n in (1, 100):
            for name, (_, base, wrap, _) in servers.items():
                url = f"{base}/invocations" if "mlflow" in name else f"{base}/predict"
                lat, errors = asyncio.run(load(url, wrap(rows[:n]), args.seconds))
                q = statistics.quantiles(lat, n=100)
                rps = len(lat) / args.seconds
                results[(name, n)] = (rps, q[49] * 1000, q[98] * 1000)
                print(
                    f"{name:<22}{n:>5}{len(lat):>10}{rps:>10.0f}{q[49] * 1000:>9.2f}{q[98] * 1000:>9.2f}{errors:>8}"
                )
        for n in (1, 100):
            ratio = results[("asgard", n)][0] / results[("mlflow models serve", n)][0]
            print(f"throughput ratio asgard / mlflow, {n} row(s): {ratio:.1f}x")
        print("targets: >= 10x mlflow throughput, p99 <= 10 ms for one row (concurrency 8)")
        if not same:
            raise SystemExit("the two servers disagree")
    finally:
        for p in procs:
            os.killpg(os.getpgid(p.pid), 15)


if __name__ == "__main__":
    main()
