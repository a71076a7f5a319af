#!/usr/bin/env python3
"""psycopg 3 stress client for Switchyard's integration tests.

Opens --concurrency connections with psycopg's defaults (autocommit off,
prepare_threshold=5, so statements executed more than five times become
server-side prepared statements) and runs --transactions transactions on each.
Every transaction repeats the same parameterised queries and checks their
results; the final check compares row counts with what was committed.

With --read-your-writes true, each connection instead runs in autocommit mode: each
of its --transactions iterations inserts a row and at once reads it back (with
the port of the server that answered); a read that misses the row just written
is an error ("stale"). The RESULT line then also has `ports=<port>:<n>,...`.

With --resets true, statements are prepared at their first use (prepare_threshold=0),
and every other iteration also rolls a transaction back, after which psycopg drops its
prepared statements with DEALLOCATE ALL and prepares them again under new names; every
third iteration runs in pipeline mode, where that DEALLOCATE ALL is sent by the extended
protocol.

--sslmode (libpq's, default prefer) chooses TLS: `require` fails every connection that
cannot have it.

Prints any errors to stderr and, last on stdout, `RESULT ok=<n> errors=<n>`.
Exit status is 0 only if there were no errors.
"""

import argparse
import sys
import threading

import psycopg

TABLE = "psycopg_stress"


def conninfo(a):
    return psycopg.conninfo.make_conninfo(
        host=a.host, port=a.port, user=a.user, password=a.password, dbname=a.dbname,
        connect_timeout=10, application_name="psycopg-stress", sslmode=a.sslmode,
    )


def transaction(conn, client_id, i, ports):
    """The default mode's iteration: one transaction of checked queries."""
    with conn.transaction():
        cur = conn.cursor()
        for k in range(3):
            cur.execute("SELECT %s::int + %s::int, %s::text", (i, k, f"c{client_id}"))
            row = cur.fetchone()
            if row != (i + k, f"c{client_id}"):
                raise AssertionError(f"sum query returned {row!r}, expected {(i + k, f'c{client_id}')!r}")
        cur.execute(f"INSERT INTO {TABLE} (client, n) VALUES (%s, %s)", (client_id, i))
        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE client = %s", (client_id,))
        (count,) = cur.fetchone()
        if count != i + 1:
            raise AssertionError(f"client {client_id} sees {count} own rows in transaction {i}, expected {i + 1}")


def write_then_read(conn, client_id, i, ports):
    """The read-your-writes mode's iteration (autocommit): a row written, then read back."""
    conn.execute(f"INSERT INTO {TABLE} (client, n) VALUES (%s, %s)", (client_id, i))
    count, port = conn.execute(
        f"SELECT count(*), inet_server_port() FROM {TABLE} WHERE client = %s AND n = %s",
        (client_id, i),
    ).fetchone()
    ports[port] = ports.get(port, 0) + 1
    if count != 1:
        raise AssertionError(f"stale read on port {port}: the row just written is missing")


def with_resets(conn, client_id, i, ports):
    """The resets mode's iteration: the default transaction, then (every other time) a
    transaction rolled back, which makes psycopg send DEALLOCATE ALL; in pipeline mode
    every third time."""

    def body():
        transaction(conn, client_id, i, ports)
        if i % 2 == 1:
            with conn.transaction():
                row = conn.execute("SELECT %s::int * 2", (i,)).fetchone()
                if row != (i * 2,):
                    raise AssertionError(f"doubling query returned {row!r}, expected {(i * 2,)!r}")
                raise psycopg.Rollback()

    if i % 3 == 2:
        with conn.pipeline():
            body()
    else:
        body()


def worker(a, client_id, results, lock, iteration, autocommit, prepare_threshold):
    """One connection running --transactions iterations; every failure is counted."""
    ok = 0
    errors = []
    ports = {}
    try:
        with psycopg.connect(
            conninfo(a), autocommit=autocommit, prepare_threshold=prepare_threshold
        ) as conn:
            for i in range(a.transactions):
                try:
                    iteration(conn, client_id, i, ports)
                    ok += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(f"client {client_id} iteration {i}: {type(e).__name__}: {e}")
                    if conn.closed:
                        break
    except Exception as e:  # noqa: BLE001
        errors.append(f"client {client_id}: {type(e).__name__}: {e}")
    with lock:
        results["ok"] += ok
        results["errors"].extend(errors)
        for port, n in ports.items():
            results["ports"][port] = results["ports"].get(port, 0) + n


def main():
    p = argparse.ArgumentParser()
    for name in ("host", "user", "password", "dbname"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--transactions", type=int, default=100)
    p.add_argument("--read-your-writes", choices=("true", "false"), default="false")
    p.add_argument("--resets", choices=("true", "false"), default="false")
    p.add_argument("--sslmode", default="prefer", help="libpq's sslmode, e.g. require")
    a = p.parse_args()

    with psycopg.connect(conninfo(a), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (client int NOT NULL, n int NOT NULL)")

    results = {"ok": 0, "errors": [], "ports": {}}
    lock = threading.Lock()
    ryw = a.read_your_writes == "true"
    resets = a.resets == "true"
    iteration = write_then_read if ryw else with_resets if resets else transaction
    threshold = 0 if resets else 5
    threads = [
        threading.Thread(target=worker, args=(a, c, results, lock, iteration, ryw, threshold))
        for c in range(a.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with psycopg.connect(conninfo(a), autocommit=True) as conn:
        # On the primary (a hint for a read-routing proxy; a comment elsewhere): a new
        # session has no commit of its own that a replica would have to show.
        (rows,) = conn.execute(f"/* switchyard: primary */ SELECT count(*) FROM {TABLE}").fetchone()
        if rows != results["ok"]:
            results["errors"].append(f"table has {rows} rows but {results['ok']} transactions committed")

    for e in results["errors"][:20]:
        print(e, file=sys.stderr)
    ports = ",".join(f"{p}:{n}" for p, n in sorted(results["ports"].items()))
    print(f"RESULT ok={results['ok']} errors={len(results['errors'])}" + (f" ports={ports}" if ports else ""))
    return 0 if not results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
