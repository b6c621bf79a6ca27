"""Load on the two HTTP servers: the web demo (`python -m trainer.serve`: a photo in, faces
found and read) and the predictor (`python -m trainer.inference.prediction_server`: 48x48
faces in).

    python bench/serving_load_bench.py [--clients 1,4,16] [--seconds 15] [--model EXPORT]

Each server runs in its own process on 127.0.0.1; N client threads here send requests back to
back for --seconds (a photo of one face to the demo, 8 faces per request to the predictor).
Prints requests/s, p50/p99 latency, errors and the server's peak resident memory, and the CPU.
Without --model, an untrained 48 px export is built first (speed does not depend on training).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_common import REPO_ROOT, child_env, markdown_table  # noqa: E402
from bench.cpu_kinds_bench import cpu_name  # noqa: E402

FACES_PER_PREDICT = 8


def build_export(directory: Path) -> Path:
    from trainer.export.saved_model import export_saved_model
    from trainer.model import build_emotion_model

    model = build_emotion_model(7, image_size=48, weights=None, trainable_from="none",
                                dense_units=16)
    path = directory / "model"
    export_saved_model(model, ["angry", "disgust", "fear", "happy", "sad", "surprise",
                               "neutral"], str(path))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], health_url: str) -> subprocess.Popen:
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health_url, timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"{command} did not answer {health_url}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(url: str, body: bytes, content_type: str, clients: int, seconds: float) -> dict:
    latencies, errors = [], []
    stop = time.monotonic() + seconds

    def client():
        while time.monotonic() < stop:
            request = urllib.request.Request(url, data=body,
                                             headers={"Content-Type": content_type})
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    response.read()
                latencies.append(time.perf_counter() - began)
            except OSError as error:
                errors.append(str(error))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    ordered = sorted(latencies) or [float("nan")]
    return {"requests_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "errors": len(errors)}


def photo_body() -> bytes:
    from matplotlib import cbook

    photo = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return cv2.imencode(".jpg", photo)[1].tobytes()


def faces_body() -> bytes:
    from beam_preprocess.synthetic import draw_face

    rng = np.random.default_rng(0)
    faces = [draw_face(i % 7, rng).astype(int).tolist() for i in range(FACES_PER_PREDICT)]
    return json.dumps({"instances": faces}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--model", help="an export (default: an untrained 48 px one)")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="serving_load_") as tmp:
        model = args.model or str(build_export(Path(tmp)))
        servers = {
            "web demo, 1 photo": (
                [sys.executable, "-m", "trainer.serve", "--model", model, "--port", "{port}",
                 "--host", "127.0.0.1"], "/api/info", "/predict", photo_body(), "image/jpeg"),
            f"predictor, {FACES_PER_PREDICT} faces": (
                [sys.executable, "-m", "trainer.inference.prediction_server", "--model", model,
                 "--port", "{port}", "--host", "127.0.0.1"], "/health", "/predict",
                faces_body(), "application/json"),
        }
        rows = []
        for name, (command, health, route, body, content_type) in servers.items():
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = start([part.replace("{port}", str(port)) for part in command],
                           base + health)
            try:
                idle = peak_rss_mb(server.pid)
                for n in clients:
                    result = load(base + route, body, content_type, n, args.seconds)
                    rows.append([name, str(n), f"{result['requests_per_s']:.1f}",
                                 f"{result['p50_ms']:.0f}", f"{result['p99_ms']:.0f}",
                                 str(result["errors"]),
                                 f"{idle:.0f} -> {peak_rss_mb(server.pid):.0f}"])
                    print("  " + " | ".join(rows[-1]), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
    print(f"\nOn {cpu_name()}, {args.seconds:g} s per row:\n")
    print(markdown_table(["server", "clients", "requests/s", "p50 ms", "p99 ms", "errors",
                          "server peak RSS MB (idle -> after)"], rows))


if __name__ == "__main__":
    main()
