"""Screenshots of the MLflow UI as a person meets it, in headless Chromium (for the README and docs).

    python docs/screenshots/take.py --store /path/to/project [--out docs/screenshots]

Serves the project's MLflow store (its mlflow.db and mlruns/) with the README's command (the UI
alone, loopback, one worker) on a free port, then lets Chromium render:

- runs.png: the `colorray` experiment's runs table (run names, the Dataset column);
- models.png: the registered model `colorray` with its versions and the @champion alias;
- logged-models.png: the experiment's Logged Models view (candidates with their test metrics).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the project folder holding mlflow.db")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--width", type=int, default=2200)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Chromium (Debian: apt-get install chromium)")
    store, out = Path(args.store).resolve(), Path(args.out).resolve()
    from mlflow import MlflowClient

    exp = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_experiment_by_name("colorray").experiment_id
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=store, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("mlflow ui did not start")
                time.sleep(0.5)
        # The UI's workflow switch (GenAI | Model training) is a browser setting, GenAI in a fresh
        # profile; the query parameter sets it as a person's click on "Model training" does.
        ml = "?workflowType=machine_learning"
        pages = {"runs.png": f"#/experiments/{exp}/runs{ml}",
                 "models.png": f"#/models/colorray{ml}",
                 "logged-models.png": f"#/experiments/{exp}/models{ml}"}
        for name, route in pages.items():
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.width},{args.height}", "--virtual-time-budget=20000",
                            f"--screenshot={out / name}", f"http://127.0.0.1:{port}/{route}"],
                           check=True, capture_output=True, timeout=180)
            print(f"{out / name}: {route}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
