"""A job-queue worker: ``python -m rehearsal.worker`` (environment ``BAZBII_DSN``, ``BAZBII_WORKER_VERSION``).

Takes queued jobs with ``FOR UPDATE SKIP LOCKED`` (several workers never take the same job),
marks them done; version 2.0 also fills ``posts.category`` of the job's post when it is empty.
Stops after its current batch on SIGTERM. Connects through PgBouncer and retries on errors
(a paused pool only makes it wait).

Like every pod of the app it gets the flags document (``BAZBII_FLAGS``) at start and is rolled
when it changes; its category fill reads no flag: it gives the old path's NULL categories the
default, the catch-up that keeps 0002's contract (NOT NULL) valid once the old path is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psycopg

TAKE = """
SELECT id, post_id FROM jobs WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 20
"""


def main() -> int:
    version = os.environ.get("BAZBII_WORKER_VERSION", "1.9.0")
    dsn = os.environ["BAZBII_DSN"]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    conn = None
    done = errors = 0
    while not stopping:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, prepare_threshold=None, connect_timeout=5)
            with conn.transaction():
                rows = conn.execute(TAKE).fetchall()
                if rows:
                    ids = [r[0] for r in rows]
                    conn.execute("UPDATE jobs SET status = 'done', done_by = %s, done_at = now() WHERE id = ANY(%s)",
                                 (version, ids))
                    if not version.startswith("1."):
                        conn.execute("UPDATE posts SET category = 'general' WHERE id = ANY(%s) AND category IS NULL",
                                     ([r[1] for r in rows],))
            done += len(rows)
            if not rows:
                time.sleep(0.2)
        except psycopg.Error as exc:
            errors += 1
            print(f"worker {version}: {type(exc).__name__}: {str(exc).strip()[:200]}", flush=True)
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.2)
    print(f"worker {version}: stopped after {done} jobs, {errors} errors", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
