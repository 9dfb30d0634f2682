"""A small PgBouncer exporter (Debian's prometheus-pgbouncer-exporter 1.7 fails with PgBouncer 1.18).

``python -m rehearsal.pgbouncer_exporter HOST PORT`` with ``BAZBII_PGBOUNCER_ADMIN_DSN`` in the
environment. Each scrape runs ``SHOW POOLS`` and ``SHOW STATS`` and answers with the
prometheus-community metric names.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

POOL_GAUGES = {"cl_active": "client_active_connections", "cl_waiting": "client_waiting_connections",
               "sv_active": "server_active_connections", "sv_idle": "server_idle_connections"}
STATS_COUNTERS = {"total_xact_count": ("sql_transactions_pooled_total", 1.0),
                  "total_query_count": ("queries_pooled_total", 1.0),
                  "total_wait_time": ("client_wait_seconds_total", 1e-6),
                  "total_query_time": ("queries_duration_seconds_total", 1e-6)}


def scrape(dsn: str) -> str:
    lines = []
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None, connect_timeout=3) as conn:
        cur = conn.execute("SHOW POOLS")
        names = [c.name for c in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row))
            labels = f'database="{r["database"]}",user="{r["user"]}"'
            for col, metric in POOL_GAUGES.items():
                lines.append(f"pgbouncer_pools_{metric}{{{labels}}} {float(r[col])}")
            wait = float(r["maxwait"]) + float(r.get("maxwait_us", 0)) / 1e6
            lines.append(f"pgbouncer_pools_client_maxwait_seconds{{{labels}}} {wait}")
        cur = conn.execute("SHOW STATS")
        names = [c.name for c in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row))
            labels = f'database="{r["database"]}"'
            for col, (metric, scale) in STATS_COUNTERS.items():
                lines.append(f"pgbouncer_stats_{metric}{{{labels}}} {float(r[col]) * scale}")
    lines.append("pgbouncer_up 1")
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        try:
            body, code = scrape(os.environ["BAZBII_PGBOUNCER_ADMIN_DSN"]), 200
        except Exception as exc:
            body, code = f"# scrape failed: {type(exc).__name__}\npgbouncer_up 0\n", 200
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    ThreadingHTTPServer((host, port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
