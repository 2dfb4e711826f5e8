"""The peer of benches/flight.rs: a bare pyarrow Flight server serving one Arrow IPC file's
table from memory. Every ticket gets the whole table; nothing is checked, counted or recorded.

    python benches/flight_pyarrow.py FILE   # prints "pyarrow listening on 127.0.0.1:PORT"
"""
import sys

import pyarrow as pa
import pyarrow.flight as flight


class Bare(flight.FlightServerBase):
    def __init__(self, table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main():
    # Read from an ordinary file (not mapped): the table's buffers are in this process's memory.
    with pa.OSFile(sys.argv[1]) as source:
        table = pa.ipc.open_file(source).read_all()
    server = Bare(table)
    print(f"pyarrow listening on 127.0.0.1:{server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
