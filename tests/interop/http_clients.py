#!/usr/bin/env python3
"""Interop: the HTTP clients data users already have, against kaifang's demo data API.

Starts the given kaifang binary on the embedded demo, its air-quality dataset written as a
3,000,000-row Parquet file of 23 row groups, and checks, as those users would:
- pandas: read_csv on a rows.csv URL, and on a gzip answer (Accept-Encoding: gzip);
- polars: read_csv and scan_csv on rows.csv URLs (polars asks for the length first);
- DuckDB with its httpfs extension: read_parquet on /download, four queries at once, anonymous
  under the default rate limits (their dozens of Range requests count as one read each),
  read_csv on a rows.csv URL, and on conditional rows with the key in an HTTP secret;
- headless Chromium (Debian's, driven by Playwright): a page of another origin fetches rows
  anonymously and with the demo user's key (a CORS preflight), reads the RateLimit and ETag
  fields, and is refused the admin API, which takes no cross-origin calls.

Every answer is checked against the same data read without the client in between.
Usage: http_clients.py PATH_TO_KAIFANG. Exits non-zero on the first mismatch.
"""

import concurrent.futures
import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

import duckdb
import duckdb_extension_httpfs
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

from demo_gateway import start_listeners

AIR_QUALITY_ROWS = 3_000_000


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def fetch(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.status, r.headers, r.read()


def check_pandas(base):
    url = f"{base}/v1/datasets/bus-arrivals/rows.csv"
    _, _, raw = fetch(url)
    lines = raw.decode().count("\n")
    frame = pd.read_csv(url)
    check(frame.shape == (lines - 1, 11), f"pandas read_csv: {frame.shape}, expected {(lines - 1, 11)}")
    check(list(frame.columns)[:2] == ["arrival_id", "route"], f"pandas columns: {list(frame.columns)}")
    status, headers, body = fetch(url, {"Accept-Encoding": "gzip"})
    check(headers.get("Content-Encoding") == "gzip", f"gzip answer: {headers}")
    check(gzip.decompress(body) == raw, "the gzip answer decodes to the plain one")
    coded = pd.read_csv(url, storage_options={"Accept-Encoding": "gzip"}, compression="gzip")
    check(coded.equals(frame), "pandas reads the gzip answer as the plain one")
    print(f"pandas {pd.__version__}: read_csv on rows.csv ({frame.shape[0]} rows) and on its gzip answer")
    return frame


def check_polars(base, frame):
    url = f"{base}/v1/datasets/bus-arrivals/rows.csv"
    read = pl.read_csv(url)
    check(read.shape == frame.shape, f"polars read_csv: {read.shape}")
    scanned = pl.scan_csv(url).filter(pl.col("delay_seconds") > 120).select("route", "delay_seconds").collect()
    expected = frame[frame["delay_seconds"] > 120][["route", "delay_seconds"]]
    check(scanned.shape == expected.shape, f"polars scan_csv: {scanned.shape}, expected {expected.shape}")
    check(scanned["delay_seconds"].sum() == int(expected["delay_seconds"].sum()), "polars scan_csv sums")
    print(f"polars {pl.__version__}: read_csv and scan_csv on rows.csv URLs")


def duckdb_connection():
    extension = os.path.join(
        os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", f"v{duckdb.__version__}",
        "httpfs.duckdb_extension")
    connection = duckdb.connect()
    connection.execute(f"LOAD '{extension}'")
    return connection


def check_duckdb(base, data_dir, key):
    local = pq.read_table(os.path.join(data_dir, "demo", "air-quality.parquet"))
    groups = pq.ParquetFile(os.path.join(data_dir, "demo", "air-quality.parquet")).num_row_groups
    check(local.num_rows == AIR_QUALITY_ROWS and groups == 23, f"{local.num_rows} rows, {groups} row groups")
    expected = (local.num_rows, round(local.column("pm25").to_pandas().mean(), 6))
    url = f"{base}/v1/datasets/air-quality/download"
    query = f"SELECT count(*), round(avg(pm25), 6) FROM read_parquet('{url}')"

    def run(_):
        return duckdb_connection().execute(query).fetchone()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(run, range(4)))
    for answer in answers:
        check(answer == expected, f"read_parquet over HTTP: {answer}, expected {expected}")
    rows = duckdb_connection().execute(
        f"SELECT count(*) FROM read_csv('{base}/v1/datasets/bus-arrivals/rows.csv')").fetchone()[0]
    check(rows == 5000, f"DuckDB read_csv on rows.csv: {rows}")
    # Conditional rows, the key in an HTTP secret's headers: the agreement's scope (Haizhou only).
    connection = duckdb_connection()
    connection.execute(f"CREATE SECRET kaifang (TYPE http, EXTRA_HTTP_HEADERS MAP {{'Authorization': 'Bearer {key}'}})")
    districts = connection.execute(
        f"SELECT DISTINCT district FROM read_csv('{base}/v1/datasets/enterprises/rows.csv')").fetchall()
    check(districts == [("Haizhou",)], f"DuckDB reads conditional rows within the agreement: {districts}")
    print(f"duckdb {duckdb.__version__}: four concurrent read_parquet on /download ({groups} row groups), "
          f"anonymous; read_csv on rows.csv, and on conditional rows with the key")


PAGE = """<!doctype html>
<title>kaifang from another origin</title>
<script>
window.check = async (gateway, admin, key) => {
  const out = {};
  const anonymous = await fetch(gateway + "/v1/datasets/bus-arrivals/rows?limit=3");
  out.anonymous = {status: anonymous.status, rows: (await anonymous.json()).length,
                   remaining: anonymous.headers.get("RateLimit-Remaining"),
                   etag: anonymous.headers.get("ETag"), id: anonymous.headers.get("X-Request-Id")};
  const keyed = await fetch(gateway + "/v1/datasets/enterprises/rows.json?limit=2",
                            {headers: {"Authorization": "Bearer " + key}});
  out.keyed = {status: keyed.status, rows: (await keyed.json()).length,
               remaining: keyed.headers.get("RateLimit-Remaining")};
  try {
    await fetch(admin + "/admin/keys", {headers: {"Authorization": "Bearer x"}});
    out.admin = "read";
  } catch (e) {
    out.admin = "blocked";
  }
  return out;
};
</script>
"""


def check_chromium(base, admin, key):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    check(chromium is not None, "Debian's chromium is installed")

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            out = page.evaluate("([g, a, k]) => window.check(g, a, k)", [base, admin, key])
            browser.close()
    finally:
        server.shutdown()
    check(out["anonymous"]["status"] == 200 and out["anonymous"]["rows"] == 3, f"anonymous: {out}")
    check(out["anonymous"]["remaining"] is not None and out["anonymous"]["etag"], f"exposed fields: {out}")
    check(out["anonymous"]["id"], f"X-Request-Id exposed: {out}")
    check(out["keyed"]["status"] == 200 and out["keyed"]["rows"] == 2, f"keyed, after its preflight: {out}")
    check(out["admin"] == "blocked", f"the admin API is not open to pages: {out}")
    print("chromium: a page of another origin read rows anonymously and with a key; the admin API stayed closed")


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as work:
        data_dir = os.path.join(work, "data")
        demo = os.path.join(data_dir, "demo")
        for args in (["--out", demo], ["--rows", str(AIR_QUALITY_ROWS), "--dataset", "air-quality", "--out", demo]):
            subprocess.run([binary, "demo-data", *args], check=True, stdout=subprocess.DEVNULL)
        process, addresses = start_listeners(binary, data_dir)
        try:
            base, admin = f"http://{addresses['http']}", f"http://{addresses['admin']}"
            with open(os.path.join(data_dir, "demo-user.key")) as f:
                key = f.read().strip()
            frame = check_pandas(base)
            check_polars(base, frame)
            check_duckdb(base, data_dir, key)
            check_chromium(base, admin, key)
            status, _, body = fetch(f"{admin}/metrics")
            joined = [line for line in body.decode().splitlines()
                      if line.startswith("kaifang_range_reads_joined_total ")]
            check(joined and float(joined[0].split()[1]) > 0, f"range reads joined: {joined}")
            print(f"range reads counted as part of an earlier one: {joined[0].split()[1]}")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
