#!/usr/bin/env python3
"""Interop: the ADBC Flight SQL driver against kaifang's demo over Flight SQL.

Starts the given kaifang binary on the embedded demo in a fresh data directory, then, as an
analytics user with ADBC would:
- asks the server about itself (adbc_get_info): its name and that it is read-only;
- lists the catalog, schemas and tables (adbc_get_objects) anonymously and with the demo
  user's key: the unconditional datasets for everyone, enterprises only under the agreement,
  the non-open dataset never;
- reads a table's schema (adbc_get_table_schema), the agreement's columns for enterprises;
- executes SQL on every unconditional dataset and on the conditional one with the key, and
  checks the answers value for value against pyarrow.flight's plain DoGet of the same data
  (so masked values are exact and no row outside the agreement's row filter appears);
- runs a prepared statement with a bound parameter, a GROUP BY over the conditional dataset
  (on masked values and scoped rows only), and checks the refusals: a column outside the
  agreement (PermissionDenied), a non-open dataset answered exactly as an unknown one.

Usage: flightsql_adbc.py PATH_TO_KAIFANG. Exits non-zero on the first mismatch.
"""

import os
import sys
import tempfile

import pyarrow.compute as pc
import pyarrow.flight as flight
import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import Error as AdbcError

from demo_gateway import start


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def connect(address, key=None):
    options = {}
    if key is not None:
        options[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {key}"
    return flightsql.connect(f"grpc://{address}", db_kwargs=options, autocommit=True)


def tables(connection):
    objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
    found = set()
    for catalog in objects:
        check(catalog["catalog_name"] == "kaifang", f"one catalog, kaifang: {catalog['catalog_name']}")
        for schema in catalog["catalog_db_schemas"]:
            check(schema["db_schema_name"] == "public", f"one schema, public: {schema['db_schema_name']}")
            found.update(table["table_name"] for table in schema["db_schema_tables"])
    return found


def execute(connection, sql, parameters=None):
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        return cursor.fetch_arrow_table()
    finally:
        cursor.close()


def refusal(connection, sql):
    try:
        execute(connection, sql)
    except AdbcError as e:
        return str(e).splitlines()[0]
    raise AssertionError(f"answered: {sql}")


def plain(address, dataset, key=None):
    """The dataset as plain Flight's DoGet answers it, through pyarrow.flight."""
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())] if key else [])
    client = flight.connect(f"grpc://{address}")
    try:
        return client.do_get(flight.Ticket(dataset.encode()), options).read_all()
    finally:
        client.close()


def same_values(answered, expected, what):
    check(answered.num_rows == expected.num_rows, f"{what}: {answered.num_rows} rows, not {expected.num_rows}")
    check(answered.column_names == expected.column_names, f"{what}: columns {answered.column_names}")
    for name in expected.column_names:
        check(answered.column(name).to_pylist() == expected.column(name).to_pylist(), f"{what}: values of {name}")


def statements(address, key):
    with connect(address) as anonymous:
        for dataset in ["bus-arrivals", "parking-lots", "air-quality"]:
            same_values(execute(anonymous, f'SELECT * FROM "{dataset}"'), plain(address, dataset), dataset)
        air = plain(address, "air-quality")
        station = air.column("station_id")[0].as_py()
        bound = execute(anonymous, 'SELECT station_id, aqi FROM "air-quality" WHERE station_id = ?', (station,))
        expected = pc.sum(pc.equal(air.column("station_id"), station)).as_py()
        check(bound.num_rows == expected and set(bound.column("station_id").to_pylist()) == {station},
              f"the bound parameter: {bound.num_rows} rows, not {expected}")
        non_open = refusal(anonymous, 'SELECT * FROM "subsistence-allowance"')
        unknown = refusal(anonymous, 'SELECT * FROM "no-such-dataset"')
        check(non_open == unknown and "NOT_FOUND" in non_open, f"non-open {non_open!r} vs unknown {unknown!r}")
    with connect(address, key) as holder:
        expected = plain(address, "enterprises", key)
        same_values(execute(holder, "SELECT * FROM enterprises"), expected, "enterprises under the agreement")
        check(all("****" in m for m in expected.column("legal_rep_mobile").to_pylist()), "masked mobiles")
        grouped = execute(holder, "SELECT district, count(*) AS n, min(legal_rep_mobile) AS m "
                                  "FROM enterprises GROUP BY district")
        check(set(grouped.column("district").to_pylist()) == set(expected.column("district").to_pylist()),
              f"only the agreement's districts: {grouped.column('district').to_pylist()}")
        check(sum(grouped.column("n").to_pylist()) == expected.num_rows, "only the agreement's rows are counted")
        check(all("****" in m for m in grouped.column("m").to_pylist()), "aggregates see masked values")
        outside = refusal(holder, "SELECT registered_capital FROM enterprises")
        check("UNAUTHORIZED" in outside or "PermissionDenied" in outside, f"outside the scope: {outside}")
        check("column_outside_scope" in outside, f"the refusal names its reason: {outside}")


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        process, address = start(binary, data_dir)
        try:
            with open(os.path.join(data_dir, "demo-user.key")) as f:
                key = f.read().strip()
            with connect(address) as anonymous:
                info = anonymous.adbc_get_info()
                check(info.get("vendor_name") == "kaifang", f"vendor_name: {info}")
                open_tables = tables(anonymous)
                check({"bus-arrivals", "parking-lots", "air-quality"} <= open_tables, f"open tables: {open_tables}")
                check("enterprises" not in open_tables, "enterprises is not a table without an agreement")
                check("subsistence-allowance" not in open_tables, "non-open data is never a table")
                schema = anonymous.adbc_get_table_schema("air-quality", catalog_filter="kaifang", db_schema_filter="public")
                check(len(schema) > 0, f"air-quality's schema: {schema}")
            with connect(address, key) as holder:
                held = tables(holder)
                check("enterprises" in held, f"enterprises under the agreement: {held}")
                check("subsistence-allowance" not in held, "non-open data is never a table")
                schema = holder.adbc_get_table_schema("enterprises", catalog_filter="kaifang", db_schema_filter="public")
                check("name" in schema.names and "registered_capital" not in schema.names,
                      f"the agreement's columns: {schema.names}")
            statements(address, key)
            print(f"ADBC Flight SQL interop: ok ({len(open_tables)} open tables, {len(held)} under the agreement)")
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
