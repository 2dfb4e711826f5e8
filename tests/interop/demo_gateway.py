"""Starting the kaifang binary on its embedded demo for the interop checks."""

import os
import subprocess
import sys


def start(binary, data_dir):
    """Runs `kaifang serve` on the embedded demo in `data_dir`, every listener on a free port;
    returns the process and its Flight address once all three listeners are up."""
    process, addresses = start_listeners(binary, data_dir)
    return process, addresses["flight"]


def start_listeners(binary, data_dir):
    """As `start`, returning the process and the address of each listener (http, flight,
    admin)."""
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--http", "127.0.0.1:0",
         "--flight", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "KAIFANG_LOG": "warn"})
    addresses = {}
    for line in process.stdout:
        if line.startswith("kaifang: ") and " listening on " in line:
            name, address = line[len("kaifang: "):].split(" listening on ")
            addresses[name] = address.strip()
        if len(addresses) == 3:
            break
    if len(addresses) < 3:
        process.kill()
        sys.exit(f"kaifang did not start all its listeners: {addresses}")
    return process, addresses
