"""The client side of benches/flightsql.sh: Flight SQL through the ADBC driver, against kaifang
and ROAPI on the same Parquet file, and kaifang's plain Flight DoGet of the same dataset.

Usage: flightsql_client.py KAIFANG_FLIGHT ROAPI_FLIGHT ROWS RUNS LOOKUP_ID LOOKUPS
Prints one line per figure: `name value` (seconds, or milliseconds for the lookup p50).
"""

import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

kaifang, roapi, rows, runs, lookup_id, lookups = sys.argv[1:7]
rows, runs, lookup_id, lookups = int(rows), int(runs), int(lookup_id), int(lookups)


def adbc(address, sql):
    """One statement on a new connection, its whole answer read; returns (seconds, table)."""
    start = time.perf_counter()
    with flightsql.connect(f"grpc://{address}", autocommit=True) as connection:
        cursor = connection.cursor()
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
        cursor.close()
    return time.perf_counter() - start, table


def doget(address, ticket):
    """One plain DoGet on a new connection, its whole answer read; returns (seconds, table)."""
    start = time.perf_counter()
    client = flight.connect(f"grpc://{address}")
    table = client.do_get(flight.Ticket(ticket)).read_all()
    client.close()
    return time.perf_counter() - start, table


def check(condition, message):
    if not condition:
        sys.exit(f"benchmark answer check failed: {message}")


# SELECT * through ADBC against plain DoGet, alternating, on the same kaifang (and ROAPI's
# SELECT * through ADBC for context). Each whole answer (some hundreds of MB) is let go before
# the next call starts, so that no call runs while another's answer is still held: the client
# libraries allocate differently (the ADBC driver through C malloc, pyarrow through its own
# pool), and a held answer would make the figure one of the client's memory, not the server.
sql_times, get_times, roapi_times = [], [], []
for _ in range(runs):
    seconds, table = adbc(kaifang, "SELECT * FROM trips")
    check(table.num_rows == rows, f"SELECT * gave {table.num_rows} rows")
    sql_times.append(seconds)
    del table
    seconds, table = doget(kaifang, b"trips")
    check(table.num_rows == rows, f"DoGet gave {table.num_rows} rows")
    get_times.append(seconds)
    del table
    seconds, table = adbc(roapi, "SELECT * FROM t")
    check(table.num_rows == rows, f"ROAPI's SELECT * gave {table.num_rows} rows")
    roapi_times.append(seconds)
    del table
print("select_all_adbc", statistics.median(sql_times))
print("select_all_doget", statistics.median(get_times))
print("select_all_adbc_roapi", statistics.median(roapi_times))

# A GROUP BY over the whole table, kaifang and ROAPI alternating; the answers must agree.
group = "SELECT district, count(*) AS n, sum(fare) AS fare FROM {} GROUP BY district ORDER BY district"
k_times, r_times = [], []
for _ in range(runs):
    seconds, k_table = adbc(kaifang, group.format("trips"))
    k_times.append(seconds)
    seconds, r_table = adbc(roapi, group.format("t"))
    r_times.append(seconds)
    check(k_table.column("district").to_pylist() == r_table.column("district").to_pylist(), "GROUP BY districts")
    check(k_table.column("n").to_pylist() == r_table.column("n").to_pylist(), "GROUP BY counts")
    check(sum(k_table.column("n").to_pylist()) == rows, "GROUP BY covers every row")
print("group_by_kaifang", statistics.median(k_times))
print("group_by_roapi", statistics.median(r_times))


# A point query on the indexed column, one connection, one statement after another.
def point(address, table):
    sql = f"SELECT * FROM {table} WHERE trip_id = {lookup_id}"
    with flightsql.connect(f"grpc://{address}", autocommit=True) as connection:
        cursor = connection.cursor()
        latencies = []
        for i in range(lookups + lookups // 10):
            start = time.perf_counter()
            cursor.execute(sql)
            answer = cursor.fetch_arrow_table()
            if i >= lookups // 10:
                latencies.append(time.perf_counter() - start)
            check(answer.num_rows == 1 and answer.column("trip_id")[0].as_py() == lookup_id, "the point query's row")
        cursor.close()
    return statistics.median(latencies) * 1000


print("point_p50_ms_kaifang", point(kaifang, "trips"))
print("point_p50_ms_roapi", point(roapi, "t"))
