"""Run the example DAG end to end against a local emulator: the README's first command (`make demo`).

Starts the emulator on a free loopback port, points a throwaway Airflow home (``.demo/airflow``)
and the ``content_exporter_default`` connection (an env var) at it, migrates the metadata DB,
runs ``airflow dags test example_content_exporter``, prints where the file landed, and stops
the emulator by its PID whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
LOGICAL_DATE = "2026-11-26"
PAGE_ID = "123456"
DAG_ID = "example_content_exporter"


def start_emulator(api_key: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_cex.emulator", "--port", "0", "--export-seconds", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "CEX_EMULATOR_API_KEY": api_key},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"The emulator did not start (it printed {line!r}).")
    return proc, line[line.index("http://") :]


def main() -> int:
    shutil.rmtree(DEMO / "airflow", ignore_errors=True)
    (DEMO / "airflow").mkdir(parents=True)
    output_dir = DEMO / "exports"
    api_key = "cex-demo-key-0123456789abcdefghijklmnopqrstuv"
    emulator, base_url = start_emulator(api_key)
    print(f"Emulator (pid {emulator.pid}) serving the Remote API at {base_url}")
    try:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT": json.dumps(
                {"conn_type": "content_exporter", "host": base_url, "password": api_key}
            ),
            "AIRFLOW_VAR_CEX_OUTPUT_DIR": str(output_dir),
        }
        airflow = [sys.executable, "-m", "airflow"]
        log_path = DEMO / "airflow-demo.log"
        with open(log_path, "w") as log:
            print("Migrating a throwaway Airflow metadata DB in .demo/airflow ...", flush=True)
            subprocess.run([*airflow, "db", "migrate"], env=env, check=True, stdout=log, stderr=log)
        print(f"Running `airflow dags test {DAG_ID} {LOGICAL_DATE}` ...", flush=True)
        run = subprocess.run(
            [*airflow, "dags", "test", DAG_ID, LOGICAL_DATE, "-c", json.dumps({"page_id": PAGE_ID})],
            env=env,
            text=True,
            capture_output=True,
        )
        with open(log_path, "a") as log:
            log.write(run.stdout + run.stderr)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-4000:])
            print(f"The DAG run failed (full log: {log_path}).", file=sys.stderr)
            return 1
        landed = output_dir / LOGICAL_DATE / f"page-{PAGE_ID}.pdf"
        if not landed.is_file():
            print(f"The DAG succeeded but {landed} is missing (log: {log_path}).", file=sys.stderr)
            return 1
        data = landed.read_bytes()
        print(f"DAG run succeeded; task log: {log_path}")
        print(f"Export landed at: {landed}")
        print(f"  {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, starts with {data[:8]!r}")
        return 0
    finally:
        emulator.terminate()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()


if __name__ == "__main__":
    sys.exit(main())
