#!/usr/bin/env python3
"""MongoDB source read time: obdb's reader against a per-frame query loop, at several round-trip times.

    .venv/bin/python scripts/bench_mongo.py [--tasks 10] [--frames 10000] [--shapes 100000] [--rounds 1]
        [--rtt-ms 0 1 2 5 10] [--json PATH]

Builds a synthetic database in the original layout (``--frames`` frames and ``--shapes`` rectangle
shapes spread over ``--tasks`` tasks, written with :func:`obdb.mongo.layout.write_task`) on a
SecantusDB server started as a subprocess on a
free 127.0.0.1 port (or on the server in ``MONGODB_URI``, in a scratch database that is dropped
afterwards). Then, for every task:

* **obdb**: what :class:`obdb.sources.mongo.MongoSource` does with every task: the ``meta``
  document, then one aggregation grouping the task's shapes by frame on the server
  (:func:`obdb.mongo.layout.read_task_frames`), converted by :func:`frames_to_task`;
* **per-frame**: the ``meta`` document, then one ``find({"task_name", "frame"})`` per frame, as
  the original loader did (same ``(task_name, obdb_batch, frame)`` index), converted from whole
  documents by the tests' reference reader (``tests/mongo/reference_reader.py``).

Both arms' parse results are checked to be identical. Image files are not involved (their checks
cost the same whatever the reader).

A database is rarely on the same host as its readers, and what the per-frame loop loses is one
round trip per frame. So each ``--rtt-ms`` value runs both arms through a userspace latency relay:
an asyncio TCP proxy in its own process that forwards each direction's bytes half that many
milliseconds after they arrive (order kept, no bandwidth limit). ``0`` connects directly. The
"query round trip" column is what one indexed query that finds nothing takes through that
connection, measured: the relay's own hop and the server's per-query work are in it.

Before the arms it measures the cost per shape of the query forms on a direct connection: server
CPU (read from /proc when the server is the script's subprocess) and client CPU (receiving,
decoding, converting). The per-frame loop's time is about frames x query round trip + shapes x its
per-shape costs; obdb's is about shapes x its per-shape costs + a few round trips per task.

Arms rotate over ``--rounds`` rounds at each RTT; the ratios are per-frame median ÷ obdb median.
Each arm starts from the same heap: the results kept for the identity check are frozen out of the
garbage collector (``gc.freeze``) first, so no arm's collections walk another arm's objects (within
an arm, its earlier tasks' results count, as they do in :class:`~obdb.sources.mongo.MongoSource`).
Exit status is 0 whatever the ratio (a measurement, not a test); 1 if the arms' results differ.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import multiprocessing
import os
import platform
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT / "tests" / "mongo"))  # the reference reader

import pymongo  # noqa: E402
from bson import CodecOptions, decode  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from pymongo.uri_parser import parse_uri  # noqa: E402

from obdb.fileio import write_json  # noqa: E402
from obdb.mongo.connection import ensure_indexes  # noqa: E402
from obdb.mongo.layout import (  # noqa: E402
    _BATCH_SIZE,
    BATCH,
    TaskFrames,
    find_tasks,
    frames_pipeline,
    read_task_frames,
    write_task,
)
from obdb.sources.mongo import frames_to_task  # noqa: E402
from reference_reader import StoredTask, shape_order, task_to_parsed  # noqa: E402

TARGET = 20.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_secantus(storage: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                                "--storage-path", str(storage), "--log-level", "WARNING"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with pymongo.MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
            return process, uri
        except pymongo.errors.PyMongoError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"SecantusDB did not start on {uri}")
            time.sleep(0.2)


def build(db, tasks: int, frames: int, shapes: int) -> None:
    """``tasks`` tasks sharing ``frames`` frames and ``shapes`` rectangles (spread evenly)."""
    per_task = frames // tasks
    shapes_per_frame = shapes // frames
    for t in range(tasks):
        name = f"gt_train_FieldData_20200508122912_{t:02d}R_GH0600{t:02d}"
        names = [f"fielddata/{name}/{name}frame{f:04d}.png" for f in range(per_task)]
        docs = [{"shape_types": "rectangle", "occluded": s % 7 == 0,
                 "points": [10.0 + s, 20.0 + f % 50, 60.0 + s, 90.0 + f % 50], "frame": f, "label_id": 1 + s % 3,
                 "source": "manual", "object_class": ("weed", "crop", "stone")[s % 3], "img_path": names[f],
                 "img_width": 1920, "img_height": 1080}
                for f in range(per_task) for s in range(shapes_per_frame)]
        labels = [{"id": i + 1, "name": n, "color": "#ff0000", "attributes": []}
                  for i, n in enumerate(("weed", "crop", "stone"))]
        write_task(db, {"name": name, "labels": labels, "created_date": datetime(2023, 5, 8, tzinfo=timezone.utc),
                        "updated_date": datetime(2023, 5, 8, tzinfo=timezone.utc)},
                   [{"name": n, "width": 1920, "height": 1080} for n in names], docs)


# --------------------------------------------------------------------------- latency relay


async def _delayed_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Forward every chunk ``delay_s`` after it arrived, in order; reading never waits on writing,
    so the delay adds latency without limiting throughput."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if not data:
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay_s, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay_s, b""))
    try:
        await sender
    except ConnectionError:
        pass
    writer.close()


async def _relay_connection(target: tuple[str, int], delay_s: float, client_reader: asyncio.StreamReader,
                            client_writer: asyncio.StreamWriter) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_delayed_pipe(client_reader, server_writer, delay_s),
                         _delayed_pipe(server_reader, client_writer, delay_s))


def run_relay(port: int, target: tuple[str, int], delay_s: float, ready: Any) -> None:
    """Listen on 127.0.0.1:``port`` and relay to ``target`` with ``delay_s`` each way (runs until killed).

    A select() loop, not the default epoll one: epoll rounds every timeout up to a whole
    millisecond, which would turn a 0.5 ms delay into 1 ms or more."""
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    asyncio.set_event_loop(loop)
    loop.run_until_complete(asyncio.start_server(functools.partial(_relay_connection, target, delay_s),
                                                 "127.0.0.1", port))
    ready.set()
    loop.run_forever()


def start_relay(target: tuple[str, int], rtt_ms: float) -> tuple[multiprocessing.Process, int]:
    context = multiprocessing.get_context("spawn")  # no copy of this process's client threads
    ready = context.Event()
    port = free_port()
    process = context.Process(target=run_relay, args=(port, target, rtt_ms / 2000, ready), daemon=True)
    process.start()
    if not ready.wait(60):
        process.kill()
        raise SystemExit("the latency relay did not start")
    return process, port


def relayed_uri(uri: str, port: int) -> str:
    """``uri`` pointed at the relay on 127.0.0.1:``port``, credentials and options kept."""
    match = re.match(r"^(mongodb://(?:[^@/]*@)?)([^/?]*)(.*)$", uri)
    if not match or "," in match.group(2):
        raise SystemExit("--rtt-ms above 0 needs a mongodb:// URI naming one host")
    return f"{match.group(1)}127.0.0.1:{port}{match.group(3)}"


# --------------------------------------------------------------------------- the readers


def read_obdb(db, names: list[str]):
    return [frames_to_task(read_task_frames(db, doc), db.name, Path(".")) for doc in find_tasks(db, names)]


def read_per_frame(db, names: list[str]):
    out = []
    for doc in find_tasks(db, names):
        meta = db.meta.find_one({"task_name": doc["name"]})
        shapes = []
        for frame in range(len(meta["frames"])):
            shapes += db.annotation_data.find({"task_name": doc["name"], BATCH: doc.get(BATCH), "frame": frame})
        out.append(task_to_parsed(StoredTask(doc, meta["frames"], shapes), db.name))
    return out


# --------------------------------------------------------------------------- costs


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime, all threads


def per_shape_costs(db, names: list[str], server_pid: int | None) -> dict[str, dict[str, float]]:
    """Server CPU, client CPU and wall time per shape of each query form, on ``db``'s connection.

    The query runs with undecoded (raw) documents, so its client CPU is receiving only; decoding
    and conversion are timed after it."""
    raw_db = db.client.get_database(db.name, codec_options=CodecOptions(document_class=RawBSONDocument))
    options = db.codec_options
    docs = find_tasks(db, names)
    metas = {d["task_name"]: d["frames"] for d in db.meta.find({"task_name": {"$in": names}})}
    shapes = db.annotation_data.count_documents({"task_name": {"$in": names}})

    def committed(doc):
        return {"task_name": doc["name"], BATCH: doc.get(BATCH)}

    def aggregation(doc):
        return list(raw_db.annotation_data.aggregate(frames_pipeline(doc["name"], doc.get(BATCH)),
                                                     batchSize=_BATCH_SIZE, allowDiskUse=True))

    def whole(doc):
        return list(raw_db.annotation_data.find(committed(doc)))

    def convert_grouped(doc, raw):
        return frames_to_task(TaskFrames(doc, metas[doc["name"]], [decode(r.raw, options) for r in raw]), db.name,
                              Path("."))

    def convert_whole(doc, raw):
        shapes = sorted((decode(r.raw, options) for r in raw), key=shape_order)
        return task_to_parsed(StoredTask(doc, metas[doc["name"]], shapes), db.name)

    out = {}
    for form, query, convert in (("aggregation", aggregation, convert_grouped),
                                 ("whole documents", whole, convert_whole)):
        server = server_cpu_s(server_pid) if server_pid else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        raws = [query(doc) for doc in docs]
        query_wall, query_cpu = time.perf_counter() - wall, time.process_time() - cpu
        server = server_cpu_s(server_pid) - server if server_pid else None
        wall, cpu = time.perf_counter(), time.process_time()
        parsed = [convert(doc, raw) for doc, raw in zip(docs, raws)]
        assert sum(len(i.boxes) for p in parsed for i in p.images) == shapes
        convert_wall, convert_cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[form] = {"documents": sum(len(r) for r in raws), "bytes": sum(len(d.raw) for r in raws for d in r),
                     "server_cpu_us": None if server is None else server / shapes * 1e6,
                     "client_cpu_us": (query_cpu + convert_cpu) / shapes * 1e6,
                     "decode_convert_cpu_us": convert_cpu / shapes * 1e6,
                     "wall_us": (query_wall + convert_wall) / shapes * 1e6}
    return out


def query_round_trip_ms(db, n: int = 200) -> float:
    """Median time of one indexed query that finds nothing: what the per-frame loop pays per frame
    on top of its documents."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        db.annotation_data.find_one({"task_name": "no such task", BATCH: None, "frame": 0})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# --------------------------------------------------------------------------- main


READERS = {"obdb": read_obdb, "per-frame": read_per_frame}


def run_rtt(db, names: list[str], rounds: int) -> tuple[dict[str, list[float]], bool]:
    arms = list(READERS)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    results: dict[str, Any] = {}
    try:
        for round_no in range(rounds):
            shift = round_no % len(arms)
            for arm in arms[shift:] + arms[:shift]:  # each arm takes each place in turn
                # the results kept for the comparison would otherwise make every later arm's garbage
                # collections walk them: each arm starts from the same heap
                results.pop(arm, None)
                gc.collect()
                gc.freeze()
                t0 = time.perf_counter()
                results[arm] = READERS[arm](db, names)
                times[arm].append(time.perf_counter() - t0)
                print(f"  round {round_no + 1} {arm:>20}: {times[arm][-1]:.2f} s", flush=True)
        return times, all(results[arm] == results["obdb"] for arm in arms)
    finally:
        gc.unfreeze()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--shapes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both arms at each RTT")
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0],
                        help="round-trip times to add through the latency relay (0 = direct connection)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    process = None
    storage = tempfile.TemporaryDirectory(prefix="bench_mongo_")
    if os.environ.get("MONGODB_URI"):
        uri, where = os.environ["MONGODB_URI"], "the server in MONGODB_URI"
    else:
        process, uri = start_secantus(Path(storage.name) / "data")
        where = f"SecantusDB {importlib.metadata.version('SecantusDB')} (subprocess, 127.0.0.1)"
    target = parse_uri(uri)["nodelist"][0]
    db_name = f"bench_mongo_{uuid.uuid4().hex[:8]}"
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client[db_name]
    result: dict[str, Any] = {"target_ratio": TARGET}
    try:
        started = time.perf_counter()
        ensure_indexes(db)
        build(db, args.tasks, args.frames, args.shapes)
        names = sorted(d["name"] for d in db.tasks.find({}, {"name": 1}))
        n_frames = sum(len(m["frames"]) for m in db.meta.find())
        n_shapes = db.annotation_data.count_documents({})
        result["setup"] = {"server": where, "pymongo": pymongo.version, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "tasks": len(names), "frames": n_frames, "shapes": n_shapes,
                           "rounds": args.rounds, "write_s": time.perf_counter() - started,
                           "load_before": os.getloadavg()[0]}
        print(f"server: {where}; pymongo {pymongo.version}; Python {platform.python_version()}; "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"data: {len(names)} tasks, {n_frames} frames, {n_shapes} shapes "
              f"(written in {result['setup']['write_s']:.0f} s)")

        costs = per_shape_costs(db, names, process.pid if process else None)
        result["per_shape"] = costs
        result["rows"] = []
        print("cost per shape, direct connection (CPU time; server CPU read from /proc):")
        for form, c in costs.items():
            server = "n/a" if c["server_cpu_us"] is None else f"{c['server_cpu_us']:5.1f} us"
            print(f"  {form:>15}: {c['documents']:>6} documents, {c['bytes'] / n_shapes:5.0f} B/shape; "
                  f"server {server}, client {c['client_cpu_us']:5.1f} us "
                  f"(decode + convert {c['decode_convert_cpu_us']:4.1f} us); wall {c['wall_us']:5.1f} us")

        for rtt in args.rtt_ms:
            relay = None
            if rtt > 0:
                relay, port = start_relay(target, rtt)
                arm_client = pymongo.MongoClient(relayed_uri(uri, port), tz_aware=True, directConnection=True)
            else:
                arm_client = pymongo.MongoClient(uri, tz_aware=True)
            try:
                arm_db = arm_client[db_name]
                round_trip = query_round_trip_ms(arm_db)
                print(f"RTT +{rtt:g} ms: query round trip {round_trip:.2f} ms", flush=True)
                times, same = run_rtt(arm_db, names, args.rounds)
            finally:
                arm_client.close()
                if relay is not None:
                    relay.kill()
                    relay.join()
            median = {arm: statistics.median(t) for arm, t in times.items()}
            loop_s = median["per-frame"]
            result["rows"].append({"rtt_ms": rtt, "relay": relay is not None, "query_round_trip_ms": round_trip,
                                   "obdb_s": times["obdb"], "per_frame_s": times["per-frame"],
                                   "ratio": loop_s / median["obdb"], "identical": same})
        result["setup"]["load_after"] = os.getloadavg()[0]
    finally:
        client.drop_database(db_name)
        client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        storage.cleanup()

    print(f"\n| RTT added | query round trip | obdb | per-frame | per-frame / obdb | >= {TARGET:g}x |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for row in result["rows"]:
        label = f"{row['rtt_ms']:g} ms" if row["relay"] else "0 (direct)"
        print(f"| {label} | {row['query_round_trip_ms']:.2f} ms | {statistics.median(row['obdb_s']):.2f} s | "
              f"{statistics.median(row['per_frame_s']):.2f} s | {row['ratio']:.1f}x | "
              f"{'yes' if row['ratio'] >= TARGET else 'no'} |")
    identical = all(row["identical"] for row in result["rows"])
    print(f"identical results in every run: {identical}")
    if args.json:
        write_json(args.json, result)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
