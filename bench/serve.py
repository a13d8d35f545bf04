"""/predict latency and throughput: Asgard's service against `mlflow models serve`.

Both serve the same registered version (the current champion of $ASGARD_HOME; run
`make demo` first). For 1-row and 100-row bodies, 8 concurrent clients send requests for
--seconds each; prints p50/p99 latency and requests/s per server, the throughput ratio,
and checks that both servers give the same predictions on the same 100 rows. Asgard is also
loaded by operator id (features from the online store, the same operators' rows), and while
that runs a probe asks /health every 20 ms: its p99 shows whether the event loop stays free.

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
    url: str, body: dict, seconds: float, concurrency: int = 8, probe: str | None = None
) -> tuple[list[float], int, list[float]]:
    """8 keep-alive connections, each sending the next request when the last answered;
    with ``probe``, one more connection GETs it every 20 ms (its latencies returned apart).
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

        probed: list[float] = []

        async def prober():
            nonlocal errors
            async with aiohttp.ClientSession() as own:  # its own connection, never queued
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    async with own.get(probe) as r:
                        await r.read()
                        errors += r.status != 200
                    probed.append(time.perf_counter() - t)
                    await asyncio.sleep(0.02)

        await asyncio.gather(
            *(worker() for _ in range(concurrency)), *([prober()] if probe else [])
        )
    return latencies, errors, probed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    from asgard_assets.contracts.model import FEATURES, MODEL_NAME
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
    gold = lakehouse.query(
        f"SELECT operator_id, {', '.join(FEATURES)} FROM gold.operator_features ORDER BY operator_id LIMIT 100",
        "gold.operator_features",
    ).df()
    ids = gold.pop("operator_id").tolist()
    rows = gold.astype("float64").fillna(0.0).to_dict("records")

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
        by_id = httpx.post(
            f"{servers['asgard'][1]}/predict", json={"operator_ids": ids}, timeout=30
        ).json()
        same_by_id = by_id["predictions"] == predictions["asgard"]
        print(f"same predictions by operator id (online store) as by rows: {same_by_id}")
        results = {}
        a_base = servers["asgard"][1]
        runs = [
            (name, n, f"{base}/invocations" if "mlflow" in name else f"{base}/predict", wrap)
            for n in (1, 100)
            for name, (_, base, wrap, _) in servers.items()
        ] + [
            (
                "asgard operator_ids",
                n,
                f"{a_base}/predict",
                lambda _, n=n: {"operator_ids": ids[:n]},
            )
            for n in (1, 100)
        ]
        for name, n, url, wrap in runs:
            probe = f"{a_base}/health" if name == "asgard operator_ids" else None
            lat, errors, probed = asyncio.run(load(url, wrap(rows[:n]), args.seconds, probe=probe))
            q = statistics.quantiles(lat, n=100)
            rps = len(lat) / args.seconds
            results[(name, n)] = (rps, q[49] * 1000, q[98] * 1000)
            print(
                f"{name:<22}{n:>5}{len(lat):>10}{rps:>10.0f}{q[49] * 1000:>9.2f}{q[98] * 1000:>9.2f}{errors:>8}"
            )
            if probed:
                h = statistics.quantiles(probed, n=100)
                print(
                    f"{'  /health meanwhile':<27}{len(probed):>10}{'':>10}{h[49] * 1000:>9.2f}{h[98] * 1000:>9.2f}"
                )
        for n in (1, 100):
            ratio = results[("asgard", n)][0] / results[("mlflow models serve", n)][0]
            by_id_ratio = results[("asgard operator_ids", n)][0] / results[("asgard", n)][0]
            print(
                f"{n} row(s): asgard / mlflow throughput {ratio:.1f}x; "
                f"by operator id / features given {by_id_ratio:.2f}x"
            )
        print(
            "targets: >= 30x mlflow for one row with p99 <= 5 ms, >= 20x for 100 rows; "
            "by operator id >= 0.5x features given, /health p99 <= 50 ms meanwhile"
        )
        same = same and same_by_id
        if not same:
            raise SystemExit("the two servers disagree")
    finally:
        for p in procs:
            os.killpg(os.getpgid(p.pid), 15)


if __name__ == "__main__":
    main()
