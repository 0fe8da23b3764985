"""The ledger writer's sustained rows/s on PostgreSQL (issue 15), beside SQLite's, through the
real `daemon.ledger.Ledger`: the journal, the queue, the one writer thread, batched
transactions of ``ledger.batch_size`` rows, fingerprints counted; the daemon's default settings.

A producer submits realistic finished calls (a chat completion's row: usage, cost, fingerprint,
key id, app, timings; ~25 non-NULL columns) in bursts of `--burst` per loop iteration, as the
meter does, as fast as it can; the figure is rows written per second of wall time from the
first submit until the writer has drained everything. That is what one daemon's ledger can
take, to set against one daemon's maximum call rate (README "Benchmark": ~1,840 calls/s at
c=32 on the 2-core machine; `--daemon-max`).

PostgreSQL is Debian's, a throwaway cluster started here (`daemon.testing.PgCluster`) with its
default durability (fsync on, synchronous_commit on), on loopback.

    python bench/pg_writer.py                 # 60,000 rows on each engine, ~1 minute
    python bench/pg_writer.py --rows 20000    # shorter
    python bench/pg_writer.py --url postgresql://meter@db:5432/bench   # an existing server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.ledger import Ledger  # noqa: E402
from daemon.ledger.engine import open_ledger  # noqa: E402
from daemon.record import CallRecord, CostSource, Usage  # noqa: E402
from daemon.testing import PgCluster  # noqa: E402


def _record(i: int) -> CallRecord:
    record = CallRecord(
        id=f"{i:018x}",
        started_at=1_772_582_400.0 + i / 1000,
        t0=0.0,
        provider="xai",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        requested_model="grok-4-fast",
        model="grok-4-fast-reasoning",
        status=200,
        billable=True,
        key_id="k_3f9a1c2b7d",
        app=f"app-{i % 8}",
        fingerprint="fp_9362061f30",
        request_id=f"req-{i}",
        response_id=f"chatcmpl-{i}",
        service_tier="default",
    )
    record.usage = Usage(
        input_tokens=165 + i % 100,
        cached_input_tokens=156,
        output_tokens=2 + i % 50,
        reasoning_tokens=125,
        reported_cost_ticks=1_583_000,
    )
    record.cost_ticks = record.computed_cost_ticks = 1_583_000
    record.cost_source = CostSource.REPORTED
    record.price_id = 1
    record.duration_ms, record.upstream_ms, record.ttft_ms = 412.5, 410.25, 120.0
    return record


def _stored(path: Path, url: str | None) -> tuple[int, int]:
    """Rows in ``calls``, and bytes on disk: PostgreSQL's calls table with its indexes (and
    TOAST); SQLite's whole file (calls is nearly all of it)."""
    db = open_ledger(url or str(path), readonly=True)
    try:
        stored = int(db.execute("select count(*) from calls").fetchone()[0])
        if url:
            return stored, int(db.execute("select pg_total_relation_size('calls')").fetchone()[0])
        return stored, path.stat().st_size
    finally:
        db.close()


async def measure(
    label: str, path: Path, url: str | None, rows: int, burst: int, batch_size: int
) -> dict[str, Any]:
    """Submit `rows` calls in bursts, then wait for the writer: rows/s written."""
    ledger = Ledger(
        path,
        url=url,
        instance="bench",
        batch_size=batch_size,
        flush_interval=0.1,
        max_queue_rows=rows + 1,
    )
    await ledger.open()
    ledger.start()
    records = [_record(i) for i in range(burst)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, rows, burst):
        for j, record in enumerate(records):  # new ids, same shape (as_tuple copies them)
            record.id = f"{label[:2]}{start + j:016x}"
        ledger.submit_batch(records[: min(burst, rows - start)])
        await asyncio.sleep(0)  # one loop iteration per burst, as the meter's flush
    submitted = time.perf_counter() - t0
    await ledger.drained()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await ledger.close()
    stored, size = await asyncio.to_thread(_stored, path, url)
    assert stored == rows, f"{label}: {stored} rows stored, {rows} submitted"
    return {
        "engine": label,
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "submit_s": round(submitted, 3),
        "wall_s": round(wall, 3),
        "daemon_cpu_us_per_row": round(cpu / rows * 1e6, 1),
        "bytes_per_row": round(size / rows),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--burst", type=int, default=64, help="calls per loop iteration")
    parser.add_argument("--batch-size", type=int, default=500, help="ledger.batch_size")
    parser.add_argument("--daemon-max", type=float, default=1840.0, help="calls/s to compare")
    parser.add_argument("--url", help="an existing PostgreSQL database (else one is started)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="xai-meter-pgbench-") as tmp:
        work = Path(tmp)
        if not args.no_sqlite:
            results.append(
                await measure("sqlite", work / "s.db", None, args.rows, args.burst, args.batch_size)
            )
        cluster = None
        url = args.url
        if url is None:
            cluster = PgCluster()
            cluster.start()
            url = cluster.create_database("bench")
        try:
            results.append(
                await measure(
                    "postgresql", work / "p.db", url, args.rows, args.burst, args.batch_size
                )
            )
        finally:
            if cluster is not None:
                cluster.stop()
    head = f"{'engine':12} {'rows/s':>8} {'x daemon max':>13} {'CPU us/row':>11} {'wall s':>7}"
    print(f"{head} {'bytes/row':>10}")
    for r in results:
        ratio = r["rows_per_s"] / args.daemon_max
        print(
            f"{r['engine']:12} {r['rows_per_s']:>8,} {ratio:>12.1f}x "
            f"{r['daemon_cpu_us_per_row']:>11} {r['wall_s']:>7} {r['bytes_per_row']:>10}"
        )
    out = ROOT / "bench" / "pg_writer.json"
    out.write_text(json.dumps({"daemon_max_calls_per_s": args.daemon_max, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
