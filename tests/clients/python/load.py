#!/usr/bin/env python3
"""psycopg 3 variant of Switchyard's failover load tool (tests/src/load.rs).

--clients threads, each with its own autocommit connection, alternating
  INSERT INTO <table> (client, seq) VALUES (%s, %s)     (a new seq per attempt)
  SELECT coalesce(max(seq), 0) FROM <table> WHERE client = %s
with psycopg's default automatic prepared statements (after 5 executions).
With --explicit-transactions, every other client (odd ids) runs each INSERT
and its SELECT together in an explicit transaction block (BEGIN ... COMMIT),
the INSERT acknowledged once the COMMIT returned.
An INSERT is acknowledged when execute() returned. Every failed statement is
counted under its SQLSTATE ("08006" when the connection broke without one);
the client then reconnects if the connection is unusable and goes on. Failed
connection attempts are counted apart ("08001" when there is no SQLSTATE).
With several --hosts, libpq tries them in order with
target_session_attrs=read-write.

The table must exist (the Rust side creates it). Runs until stdin reaches
end of file or a line is read from it (or --duration seconds, if given),
then prints one JSON line: a LoadOutcome as tests/src/load.rs parses it.
Client-side statement timeouts are not enforced (libpq has none); on
loopback a dead server is seen at once.
"""

import argparse
import json
import sys
import threading
import time

import psycopg


def now_unix():
    return time.time()


class Client:
    def __init__(self, a, cid, stop):
        self.a = a
        self.cid = cid
        self.stop = stop
        self.out = {
            "client": cid, "ops_ok": 0, "inserts_ok": 0, "selects_ok": 0, "acked": [],
            "errors": {}, "connect_failures": {}, "samples": [], "connects": 0,
            "stale_reads": 0, "max_stall": 0.0, "stall_from": 0.0, "stall_to": 0.0,
            "stall_ongoing": False, "last_ok": 0.0,
        }
        self.last = time.monotonic()
        self.last_wall = now_unix()

    def tick(self, ongoing=False):
        t, w = time.monotonic(), now_unix()
        gap = t - self.last
        if gap > self.out["max_stall"]:
            self.out.update(max_stall=gap, stall_from=self.last_wall, stall_to=w, stall_ongoing=ongoing)
        self.last, self.last_wall = t, w

    def ack(self, seq):
        acked = self.out["acked"]
        if acked and acked[-1][1] + 1 == seq:
            acked[-1][1] = seq
        else:
            acked.append([seq, seq])

    def sample(self, msg):
        if len(self.out["samples"]) < 5:
            self.out["samples"].append(msg)

    def count(self, kind, code):
        self.out[kind][code] = self.out[kind].get(code, 0) + 1

    def connect(self):
        a = self.a
        hosts = [h.rsplit(":", 1) for h in a.hosts.split(",")]
        kwargs = dict(
            host=",".join(h for h, _ in hosts), port=",".join(p for _, p in hosts),
            user=a.user, password=a.password, dbname=a.dbname,
            connect_timeout=a.connect_timeout, application_name="switchyard-load-psycopg",
            autocommit=True, sslmode=a.sslmode,
        )
        if len(hosts) > 1:
            kwargs["target_session_attrs"] = "read-write"
        return psycopg.connect(**kwargs)

    def run(self):
        a, cid = self.a, self.cid
        conn = None
        seq = 0
        last_acked = 0
        insert_next = True
        ins = f"INSERT INTO {a.table} (client, seq) VALUES (%s, %s)"
        sel = f"SELECT coalesce(max(seq), 0)::bigint FROM {a.table} WHERE client = %s"
        while not self.stop.is_set():
            if conn is None or conn.closed or conn.broken:
                try:
                    conn = self.connect()
                    self.out["connects"] += 1
                except psycopg.Error as e:
                    conn = None
                    self.count("connect_failures", getattr(e, "sqlstate", None) or "08001")
                    self.sample(f"client {cid} connect: {type(e).__name__}: {e}".strip())
                    time.sleep(a.reconnect_delay)
                    continue
            try:
                if a.explicit_transactions and cid % 2 == 1:
                    seq += 1
                    with conn.transaction():
                        conn.execute(ins, (cid, seq))
                        conn.execute(sel, (cid,)).fetchone()
                    self.ack(seq)
                    last_acked = seq
                    self.out["inserts_ok"] += 1
                    self.out["selects_ok"] += 1
                elif insert_next:
                    seq += 1
                    conn.execute(ins, (cid, seq))
                    self.ack(seq)
                    last_acked = seq
                    self.out["inserts_ok"] += 1
                else:
                    (mx,) = conn.execute(sel, (cid,)).fetchone()
                    if mx < last_acked:
                        self.out["stale_reads"] += 1
                    self.out["selects_ok"] += 1
                self.tick()
                self.out["last_ok"] = now_unix()
                self.out["ops_ok"] += 1
            except psycopg.Error as e:
                code = getattr(e, "sqlstate", None) or "08006"
                self.count("errors", code)
                what = "INSERT" if insert_next else "SELECT"
                self.sample(f"client {cid} {what}: {code} {type(e).__name__}: {e}".strip())
                if conn.closed or conn.broken or code == "25006" or code[:2] in ("57", "08"):
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - it is being dropped anyway
                        pass
                    conn = None
            insert_next = not insert_next
        self.tick(ongoing=True)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", required=True, help="host:port[,host:port...]")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--dbname", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--table", required=True)
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until stdin closes")
    p.add_argument("--op-timeout", type=float, default=30.0, help="accepted for symmetry; not enforced")
    p.add_argument("--connect-timeout", type=int, default=5)
    p.add_argument("--reconnect-delay", type=float, default=0.05)
    p.add_argument("--sslmode", default="prefer", help="libpq's sslmode")
    p.add_argument("--explicit-transactions", action="store_true",
                   help="odd clients insert and select in explicit transaction blocks")
    a = p.parse_args()

    stop = threading.Event()
    started = time.monotonic()
    clients = [Client(a, i, stop) for i in range(a.clients)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()

    def watch_stdin():
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    if a.duration > 0:
        stop.wait(a.duration)
        stop.set()
    else:
        stop.wait()
    for t in threads:
        t.join()
    report = {
        "driver": "psycopg",
        "table": a.table,
        "duration": time.monotonic() - started,
        "clients": [c.out for c in clients],
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
