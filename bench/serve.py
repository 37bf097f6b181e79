"""Serving latency and throughput: a 512x512 one-face photo through the app.

Same model, same process and machine:

* server-side latency — the request handler alone (load the upload, detect, crop, one
  batched model call), timed in-process: median and p95 over ``--calls``;
* client latency — one ``gradio_client`` request at a time against the launched app;
* throughput — ``--clients`` concurrent ``gradio_client`` clients for ``--seconds``, each in
  its own process, with the CPU each side spent per request: once as ``Client(url)`` comes
  out of the box, once given one TLS context to reuse (``ssl_verify=ssl.create_default_context()``,
  as the README's example does). Out of the box, httpx builds a fresh TLS context, loading
  certifi's CA bundle, for every HTTP call gradio_client makes, even over plain http
  (encode/httpx#2298, #3627): about 70 ms of client CPU per request;
* the same with plain HTTP clients (httpx on Gradio's REST API: upload, call, read the
  event stream), which cost far less CPU: on a 2-core machine the clients share the cores
  with the server, so this row is closer to what the server can do;
* the platform's own REST API, ``POST /api/v1/predict`` (one multipart request, one JSON
  answer) with plain httpx clients: one at a time, then ``--clients`` in parallel.

The app is served as ``fer serve`` serves it: the API with the page mounted, under uvicorn.

The photo is scikit-image's ``astronaut`` (one face). The model is a local file:

    uv run --locked python bench/serve.py --model PATH/model.keras   # serving.tflite beside it
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data

from infra.services import free_port
from model.inference.predictor import Predictor
from serving.api import create_app
from serving.app import ChampionWatcher, run_analysis
from serving.images import ImageLimits
from serving.metrics import ServingMetrics


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ask(
    url: str, photo: str, stop: float, calls: int | None, reuse_tls: bool = True
) -> tuple[list[float], float]:
    """One gradio_client client's requests, for ``calls`` of them or until ``stop``.

    Args:
        url: the app.
        photo: the image to send.
        stop: time.time() to stop at when ``calls`` is None.
        calls: how many requests, or None.
        reuse_tls: give the client one TLS context to reuse instead of one per HTTP call.

    Returns:
        (finished at, latency ms) per request, and the client's CPU seconds spent asking.
    """
    # gradio_client passes ssl_verify to httpx as `verify`, which takes a context too.
    verify = ssl.create_default_context() if reuse_tls else True
    client = Client(url, verbose=False, ssl_verify=verify)

    def one(client: Client) -> None:
        client.predict(handle_file(photo), False, api_name="/predict")

    return _timed(one, client, stop, calls)


def _ask_default(url: str, photo: str, stop: float, calls: int | None) -> tuple[list[float], float]:
    """Like :func:`_ask`, with ``Client(url)`` as it comes (a TLS context per HTTP call)."""
    return _ask(url, photo, stop, calls, reuse_tls=False)


def _timed(one: Any, client: Any, stop: float, calls: int | None) -> tuple[list[float], float]:
    """Call ``one(client)`` after 3 warm-up calls: ``calls`` times, or until ``stop``.

    Returns:
        ((time answered, ms) per call, CPU seconds this process spent).
    """
    for _ in range(3):
        one(client)
    cpu = time.process_time()
    answered: list[tuple[float, float]] = []
    while len(answered) < (calls or 10**9) and (calls is not None or time.time() < stop):
        started = time.perf_counter()
        one(client)
        answered.append((time.time(), (time.perf_counter() - started) * 1000))
    return answered, time.process_time() - cpu


def _ask_rest(url: str, photo: str, stop: float, calls: int | None) -> tuple[list[float], float]:
    """Like :func:`_ask`, through the platform's ``POST /api/v1/predict`` with httpx."""
    import httpx

    def one(client: httpx.Client) -> None:
        with open(photo, "rb") as handle:
            files = {"image": ("photo.jpg", handle, "image/jpeg")}
            answer = client.post(f"{url}api/v1/predict", files=files)
        if answer.status_code != 200 or len(answer.json()["faces"]) != 1:
            raise RuntimeError(f"the API answered {answer.status_code}: {answer.text[:300]}")

    with httpx.Client(timeout=60) as client:
        return _timed(one, client, stop, calls)


def _ask_http(url: str, photo: str, stop: float, calls: int | None) -> tuple[list[float], float]:
    """Like :func:`_ask`, through Gradio's REST API with one plain httpx client."""
    import httpx

    base = url.rstrip("/")

    def one(client: httpx.Client) -> None:
        with open(photo, "rb") as handle:
            files = {"files": ("photo.jpg", handle, "image/jpeg")}
            path = client.post(f"{base}/gradio_api/upload", files=files).json()[0]
        data = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, False]}
        event = client.post(f"{base}/gradio_api/call/predict", json=data).json()["event_id"]
        with client.stream("GET", f"{base}/gradio_api/call/predict/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: complete"):
                    return
                if line.startswith("event: error"):
                    raise RuntimeError(f"the app answered with an error: {line}")
        raise RuntimeError("the event stream ended without a result")

    with httpx.Client(timeout=60) as client:
        return _timed(one, client, stop, calls)


def _parallel(ask: Any, url: str, photo: str, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` processes asking for ``seconds``: latency, requests/s and CPU per request."""
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        stop = time.time() + 15 + seconds  # 15 s to start, connect and warm up
        runs = [pool.apply_async(ask, (url, photo, stop, None)) for _ in range(clients)]
        server_cpu = time.process_time()
        results = [result.get() for result in runs]
        server_cpu = time.process_time() - server_cpu
    answered = [run for run, _ in results]
    requests = sum(len(run) for run in answered)
    # Count only while every client was asking.
    begin = max(run[0][0] for run in answered)
    end = min(run[-1][0] for run in answered)
    window = [ms for run in answered for at, ms in run if begin < at <= end]
    return {
        "median": statistics.median(window),
        "p95": _percentile(window, 0.95),
        "rate": len(window) / (end - begin),
        # The server's CPU covers the clients' warm-up requests too: a slight overestimate.
        "server_cpu_ms": server_cpu / requests * 1000,
        "client_cpu_ms": sum(cpu for _, cpu in results) / requests * 1000,
    }


def main() -> None:
    """Run the measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model.keras (export beside)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--rest-only", action="store_true", help="only the handler and the REST API rows"
    )
    args = parser.parse_args()

    watcher = ChampionWatcher(None, Path(tempfile.mkdtemp()), poll_seconds=3600)
    watcher.serve_local(Predictor.from_file(args.model, version=args.model.parent.name))
    limits = ImageLimits()
    metrics = ServingMetrics(watcher)  # counted as the app counts
    photo = Path(tempfile.mkdtemp()) / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=90)

    for _ in range(10):
        run_analysis(watcher, str(photo), False, limits, metrics)
    server = []
    for _ in range(args.calls):
        started = time.perf_counter()
        analysis, _ = run_analysis(watcher, str(photo), False, limits, metrics)
        server.append((time.perf_counter() - started) * 1000)
        assert len(analysis.faces) == 1

    port = free_port()
    http = uvicorn.Server(
        uvicorn.Config(create_app(watcher, limits), host="127.0.0.1", port=port, log_level="error")
    )
    threading.Thread(target=http.run, daemon=True).start()
    while not http.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    # Clients run in their own processes, as real ones do: in this process they would
    # compete with the server for the GIL.
    try:
        kinds = {"REST API": _ask_rest}
        if not args.rest_only:
            kinds = {"gradio_client": _ask_default, "gradio_client, reused TLS": _ask, **kinds}
        single = {}
        for kind, ask in kinds.items():
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                answers = pool.apply(ask, (url, str(photo), 0.0, min(args.calls, 100)))[0]
            single[kind] = [ms for _, ms in answers]
        if not args.rest_only:
            kinds = {**kinds, "plain HTTP": _ask_http}
        parallel = {
            kind: _parallel(ask, url, str(photo), args.clients, args.seconds)
            for kind, ask in kinds.items()
        }
    finally:
        http.should_exit = True

    print(f"model {args.model} ({watcher.predictor.runtime}), photo 512x512, one face")
    print("| measure | median ms | p95 ms | requests/s |")
    print("|---|---|---|---|")
    print(
        f"| server-side handler, {args.calls} calls | {statistics.median(server):.1f} | "
        f"{_percentile(server, 0.95):.1f} | {1000 / statistics.median(server):.0f} (1 at a time) |"
    )
    for kind, times in single.items():
        print(
            f"| {kind}, 1 client, {len(times)} calls | {statistics.median(times):.1f} | "
            f"{_percentile(times, 0.95):.1f} | {1000 / statistics.median(times):.1f} |"
        )
    for kind, row in parallel.items():
        print(
            f"| {kind}, {args.clients} clients in parallel | {row['median']:.1f} | "
            f"{row['p95']:.1f} | {row['rate']:.1f} |"
        )
    print(f"\nCPU per request with {args.clients} clients ({os.cpu_count()} cores):")
    for kind, row in parallel.items():
        print(
            f"- {kind}: server {row['server_cpu_ms']:.1f} ms, clients {row['client_cpu_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
