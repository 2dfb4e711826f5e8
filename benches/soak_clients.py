"""The soak's clients other than wrk: Flight DoGets, workflow writes and slow readers, each
for a given time, each reporting its calls, failures and latency percentiles as one JSON line.

    python benches/soak_clients.py flight  SECONDS grpc://HOST:PORT DATASET [STREAMS]
    python benches/soak_clients.py writes  SECONDS http://HOST:PORT OWNER_KEY USER_KEY
    python benches/soak_clients.py slow    SECONDS http://HOST:PORT PATH [CONNECTIONS]
"""
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


def percentiles(times):
    if not times:
        return {"p50_ms": None, "p99_ms": None}
    times = sorted(times)
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 2)
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def run_threads(count, work):
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def flight(seconds, location, dataset, streams=4):
    import pyarrow.flight as fl

    end = time.monotonic() + seconds
    times, failures, rows = [], [], [0]
    lock = threading.Lock()

    def work(_):
        client = fl.FlightClient(location)
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                table = client.do_get(fl.Ticket(dataset.encode())).read_all()
                with lock:
                    times.append(time.monotonic() - started)
                    rows[0] += table.num_rows
            except Exception as e:  # counted and reported, the soak goes on
                with lock:
                    failures.append(str(e)[:200])

    run_threads(streams, work)
    return {"calls": len(times) + len(failures), "failed": len(failures), "rows": rows[0],
            "failures": failures[:3], **percentiles(times)}


def request(method, url, key=None, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def writes(seconds, base, owner_key, user_key):
    """Objections filed anonymously and answered by the owner; applications filed by the user
    and rejected with a reason by the owner: every workflow write, over and over."""
    end = time.monotonic() + seconds
    times, bad = [], []
    application = {"dataset": "enterprises", "purpose": "Soak", "scenario": "Soak test",
                   "security_measures": "None: test data", "columns": ["uscc", "name"]}

    def timed(method, path, key, body, expect):
        started = time.monotonic()
        status, answer = request(method, base + path, key, body)
        times.append(time.monotonic() - started)
        if status != expect:
            bad.append(f"{method} {path}: {status}")
        return answer

    while time.monotonic() < end:
        objection = timed("POST", "/v1/datasets/enterprises/objections", None,
                          {"description": "Station reading looks wrong", "contact": "soak@example.org"}, 201)
        if objection:
            timed("POST", f"/v1/objections/{objection['id']}/resolve", owner_key,
                  {"response": "Checked: the reading stands."}, 200)
        applied = timed("POST", "/v1/applications", user_key, application, 201)
        if applied:
            timed("POST", f"/v1/applications/{applied['id']}/reject", owner_key, {"reason": "Soak test"}, 200)
    return {"calls": len(times), "failed": len(bad), "failures": bad[:3], **percentiles(times)}


def slow(seconds, base, path, connections=200):
    """Connections that ask for a download and read it at 1 KiB per second, then hang up."""
    host, port = base.removeprefix("http://").split(":")
    end = time.monotonic() + seconds
    read, failures = [0], []
    lock = threading.Lock()

    def work(_):
        while time.monotonic() < end:
            try:
                s = socket.create_connection((host, int(port)), timeout=30)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                while time.monotonic() < end:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    with lock:
                        read[0] += len(chunk)
                    time.sleep(1)
                s.close()
            except OSError as e:
                with lock:
                    failures.append(str(e)[:200])
                time.sleep(1)

    run_threads(connections, work)
    return {"connections": connections, "bytes_read": read[0], "failed": len(failures), "failures": failures[:3]}


def main():
    kind, seconds = sys.argv[1], float(sys.argv[2])
    args = sys.argv[3:]
    if kind == "flight":
        result = flight(seconds, args[0], args[1], int(args[2]) if len(args) > 2 else 4)
    elif kind == "writes":
        result = writes(seconds, *args[:3])
    elif kind == "slow":
        result = slow(seconds, args[0], args[1], int(args[2]) if len(args) > 2 else 200)
    else:
        raise SystemExit(__doc__)
    print(json.dumps({"client": kind, **result}), flush=True)


if __name__ == "__main__":
    main()
