#!/usr/bin/env python3
"""Interop: pyarrow.flight reads kaifang's demo datasets over Arrow Flight.

Starts the given kaifang binary on the embedded demo in a fresh data directory, then, as an
analytics user with pyarrow would:
- lists the flights anonymously and with the demo key;
- reads an unconditional dataset (air-quality, Parquet) and checks row count, schema and
  values against the source file read by pyarrow itself;
- authenticates with Basic authentication (the key as password), reads the conditional
  enterprises dataset and checks the agreement's row filter, its scope (no registered_capital)
  and every masked value against the source;
- checks that the refusals arrive as the Flight errors pyarrow raises for them.

Usage: flight_pyarrow.py PATH_TO_KAIFANG. Exits non-zero on the first mismatch.
"""

import json
import os
import sys
import tempfile

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from demo_gateway import start


def kept(value, head, tail):
    """The value with head and tail characters kept and the rest starred, as the masks do."""
    if value is None:
        return None
    if len(value) <= head + tail:
        return "*" * max(len(value), 1)
    return value[:head] + "*" * (len(value) - head - tail) + value[len(value) - tail:]


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def ids(infos):
    return {json.loads(info.descriptor.command)["dataset"] for info in infos}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        process, address = start(binary, data_dir)
        try:
            run(address, data_dir)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print("pyarrow.flight interop: all checks passed")


def run(address, data_dir):
    client = flight.FlightClient(f"grpc://{address}")
    unconditional = {"air-quality", "bus-arrivals", "parking-lots"}

    listed = ids(client.list_flights())
    check(listed == unconditional, f"anonymous list: {sorted(listed)}")

    # Unconditional, Parquet: the whole dataset, value for value.
    info = client.get_flight_info(flight.FlightDescriptor.for_path("air-quality"))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    source = pq.read_table(os.path.join(data_dir, "demo", "air-quality.parquet"))
    check(table.num_rows == source.num_rows, f"air-quality rows: {table.num_rows} != {source.num_rows}")
    check(info.total_records == source.num_rows, f"air-quality total_records: {info.total_records}")
    check(table.schema.equals(info.schema), "air-quality: the stream's schema is the announced one")
    check(table.column_names == source.column_names, f"air-quality columns: {table.column_names}")
    for name in source.column_names:
        got, want = table.column(name), source.column(name)
        if got.type != want.type:
            want = want.cast(got.type)
        check(got.equals(want), f"air-quality column {name} differs from the source")
    schema = client.get_schema(flight.FlightDescriptor.for_path("air-quality")).schema
    check(schema.equals(info.schema), "GetSchema agrees with GetFlightInfo")
    print(f"unconditional air-quality: {table.num_rows} rows, {len(table.column_names)} columns match the source")

    # Conditional: refused without a key ...
    try:
        client.get_flight_info(flight.FlightDescriptor.for_path("enterprises"))
        raise AssertionError("enterprises was described to an anonymous caller")
    except flight.FlightUnauthenticatedError as e:
        check("key_required" in str(e), f"anonymous: {e}")

    # ... and served in scope, filtered and masked with the demo key (Basic auth, key as password).
    key = open(os.path.join(data_dir, "demo-user.key")).read().strip()
    token = client.authenticate_basic_token("demo-analytics", key)
    check(token[1] == f"Bearer {key}".encode(), f"handshake token: {token}")
    options = flight.FlightCallOptions(headers=[token])
    listed = ids(client.list_flights(options=options))
    check(listed == unconditional | {"enterprises"}, f"holder's list: {sorted(listed)}")
    command = {"dataset": "enterprises", "filter": "status = 'active'", "order": ["uscc"]}
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command)), options)
    check("registered_capital" not in info.schema.names, f"scope: {info.schema.names}")
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    check(table.schema.equals(info.schema), "enterprises: the stream's schema is the announced one")
    with pa.memory_map(os.path.join(data_dir, "demo", "enterprises.arrow")) as f:
        raw = ipc.open_file(f).read_all().to_pylist()
    wanted = sorted((r for r in raw if r["district"] == "Haizhou" and r["status"] == "active"),
                    key=lambda r: r["uscc"])
    check(table.num_rows == len(wanted) > 0, f"enterprises rows: {table.num_rows} != {len(wanted)}")
    for got, want in zip(table.to_pylist(), wanted):
        check(got["uscc"] == want["uscc"], f"order or rows differ at {want['uscc']}")
        check(got["name"] == want["name"], f"name of {want['uscc']}")
        check(got["legal_rep_name"] == kept(want["legal_rep_name"], 1, 0), f"keep_first(1): {got}")
        check(got["legal_rep_id_card"] == kept(want["legal_rep_id_card"], 6, 4), f"cn_id_card: {got}")
        check(got["legal_rep_mobile"] == kept(want["legal_rep_mobile"], 3, 4), f"cn_mobile: {got}")
    print(f"conditional enterprises: {table.num_rows} rows in scope, masks match the source")

    # Refusals as pyarrow's Flight errors.
    outside = {"dataset": "enterprises", "columns": ["registered_capital"]}
    try:
        client.do_get(flight.Ticket(json.dumps(outside)), options).read_all()
        raise AssertionError("a column outside the scope was served")
    except flight.FlightUnauthorizedError as e:
        check("column_outside_scope" in str(e), f"outside scope: {e}")
    for hidden in ["subsistence-allowance", "no-such-dataset"]:
        try:
            client.do_get(flight.Ticket(hidden), options).read_all()
            raise AssertionError(f"{hidden} was served")
        except (flight.FlightError, pa.ArrowException) as e:
            check("not_found: no dataset with this id" in str(e), f"{hidden}: {e}")
    try:
        client.get_flight_info(flight.FlightDescriptor.for_command(b"{not json"), options)
        raise AssertionError("a malformed command was accepted")
    except pa.ArrowInvalid as e:
        check("bad_command" in str(e), f"bad command: {e}")
    print("refusals: unauthenticated, unauthorized, not found and invalid as pyarrow raises them")


if __name__ == "__main__":
    main()
