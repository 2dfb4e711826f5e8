#!/usr/bin/env python3
"""Interop: the ADBC Flight SQL driver finds kaifang's demo catalog over Flight SQL.

Starts the given kaifang binary on the embedded demo in a fresh data directory, then, as an
analytics user with ADBC would:
- asks the server about itself (adbc_get_info): its name and that it is read-only;
- lists the catalog, schemas and tables (adbc_get_objects) anonymously and with the demo
  user's key: the unconditional datasets for everyone, enterprises only under the agreement,
  the non-open dataset never;
- reads a table's schema (adbc_get_table_schema), the agreement's columns for enterprises;
- checks that a SQL statement is refused with a clear message (statements are not served yet).

Usage: flightsql_adbc.py PATH_TO_KAIFANG. Exits non-zero on the first mismatch.
"""

import os
import sys
import tempfile

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
                cursor = anonymous.cursor()
                try:
                    cursor.execute('SELECT * FROM "bus-arrivals"')
                    raise AssertionError("a statement was answered")
                except AdbcError as e:
                    check("not served yet" in str(e), f"the refusal says why: {e}")
                finally:
                    cursor.close()
            with connect(address, key) as holder:
                held = tables(holder)
                check("enterprises" in held, f"enterprises under the agreement: {held}")
                check("subsistence-allowance" not in held, "non-open data is never a table")
                schema = holder.adbc_get_table_schema("enterprises", catalog_filter="kaifang", db_schema_filter="public")
                check("name" in schema.names and "registered_capital" not in schema.names,
                      f"the agreement's columns: {schema.names}")
            print(f"ADBC Flight SQL interop: ok ({len(open_tables)} open tables, {len(held)} under the agreement)")
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
