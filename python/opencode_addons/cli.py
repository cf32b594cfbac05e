"""The ``opencode-addons`` command: ``soak``, ``stats``, ``query``, ``tail``, ``record``
and ``ship``.

``ship`` replicates a store file into Redis Streams; ``query`` and ``tail`` read from Redis
instead of a file with ``--redis URL`` (the ``[redis]`` extra).

Exit codes: 0 success; 1 the soak's memory check failed, a store error, or Redis unreachable;
2 bad arguments, a file that cannot be read, or a Redis that cannot serve (bad URL, credentials,
missing commands, keys of another type under the prefix); 3 the store file is locked by another
writer. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
DURABILITY_MODES = ("none", "flush", "fsync", "group")
TAIL_POLL_SECONDS = 0.2
# With a memory-mapped log the file size does not change on every append, so a follower also
# rereads on this period even when size and mtime look unchanged.
TAIL_FORCE_SECONDS = 1.0


class CliError(Exception):
    """A failure reported as one line on stderr with ``code`` as the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _json_line(event: Any) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def _write_events(lines: Iterable[bytes], out: TextIO) -> int:
    """Writes events as the JSON lines the file holds (``raw=True`` reads); returns how many."""
    count = 0
    for line in lines:
        out.write(line.decode("utf-8"))
        out.write("\n")
        count += 1
    out.flush()
    return count


def _seq_of(line: bytes) -> int:
    # A raw line always ends with its `"seq":N}` member.
    return int(line[line.rindex(b'"seq":') + 6 : -1])


# -- argument parsing -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _milliseconds(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch milliseconds, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opencode-addons",
        description="Durable, memory-bounded event stream for long-running agent hosts.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_soak(commands)
    _add_stats(commands)
    _add_query(commands)
    _add_tail(commands)
    _add_ship(commands)
    _add_record(commands)
    return parser


def _add_soak(commands: Any) -> None:
    soak = commands.add_parser(
        "soak",
        help="simulate a long-running agent host and check that memory stays flat",
        description="Simulate a long-running agent host on the real stream and orchestrator; "
        "exit 1 if RSS grows by more than 5% once every bounded structure is full, or if the "
        "store's files exceed the disk budget plus one segment.",
    )
    soak.add_argument("--events", type=_positive_int, default=1_000_000, help="default 1000000")
    soak.add_argument("--sessions", type=_positive_int, default=200, help="concurrent sessions")
    soak.add_argument("--dir", help="keep the store here (default: a temporary directory)")
    soak.add_argument("--durability", choices=DURABILITY_MODES, default="flush")
    soak.add_argument("--history", type=_positive_int, default=100_000, help="history size")
    soak.add_argument("--cache", type=_positive_int, default=50_000, help="cache size")
    soak.add_argument(
        "--max-disk-bytes",
        type=_non_negative_int,
        default=64 << 20,
        metavar="N",
        help="the store's disk budget (default 64 MiB; 0: unbounded)",
    )
    soak.add_argument(
        "--max-segment-bytes",
        type=_positive_int,
        default=8 << 20,
        metavar="N",
        help="the store's segment size (default 8 MiB)",
    )
    soak.add_argument("--seed", type=int, default=7, help=argparse.SUPPRESS)
    soak.add_argument("--plot", metavar="FILE.png", help="write RSS and history against events")
    soak.add_argument("--json", action="store_true", help="print the figures as JSON")
    soak.add_argument("--quiet", action="store_true", help="no progress bar")
    soak.set_defaults(handler=run_soak_command)


def _add_stats(commands: Any) -> None:
    stats = commands.add_parser("stats", help="what a JSONL store file holds")
    stats.add_argument("path")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(handler=run_stats_command)


def _add_query(commands: Any) -> None:
    query = commands.add_parser(
        "query", help="matching events of a store file (or of Redis) as JSON lines"
    )
    query.add_argument("path", nargs="?", help="the store file (not with --redis)")
    _add_redis_source(query)
    query.add_argument("--stream-id")
    query.add_argument("--type", nargs="+", action="extend", dest="types", metavar="T")
    query.add_argument("--actor")
    query.add_argument("--since", type=_milliseconds, metavar="MS")
    query.add_argument("--until", type=_milliseconds, metavar="MS")
    query.add_argument("--limit", type=_non_negative_int, metavar="N")
    query.add_argument("--newest", action="store_true", help="newest first")
    query.set_defaults(handler=run_query_command)


def _add_tail(commands: Any) -> None:
    tail = commands.add_parser("tail", help="the newest events; -f follows appends")
    tail.add_argument("path", nargs="?", help="the store file (not with --redis)")
    _add_redis_source(tail)
    tail.add_argument("--stream-id", help="with --redis: one session's key")
    tail.add_argument("-n", "--lines", type=_non_negative_int, default=10, metavar="N")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--max-seconds", type=_positive_float, help=argparse.SUPPRESS)
    tail.add_argument("--max-events", type=_positive_int, help=argparse.SUPPRESS)
    tail.add_argument(
        "--interval", type=_positive_float, default=TAIL_POLL_SECONDS, help=argparse.SUPPRESS
    )
    tail.set_defaults(handler=run_tail_command)


def _add_redis_source(command: Any) -> None:
    command.add_argument("--redis", metavar="URL", help="read from Redis Streams instead")
    command.add_argument("--prefix", default="oca", help="key prefix in Redis (default oca)")


def _add_ship(commands: Any) -> None:
    ship = commands.add_parser(
        "ship",
        help="replicate a store file into Redis Streams",
        description="Ship every event of the store file past this host's last shipped seq to "
        "Redis Streams ({prefix}:events and {prefix}:session:<stream_id>), then follow appends "
        "until interrupted (--once: ship what is there and exit).",
    )
    ship.add_argument("path")
    ship.add_argument("--redis", metavar="URL", required=True)
    ship.add_argument("--once", action="store_true", help="ship what is there and exit")
    ship.add_argument("--prefix", default="oca", help="key prefix (default oca)")
    ship.add_argument("--host-id", help="this host's name in Redis (default: hostname-pathhash)")
    ship.add_argument("--batch", type=_positive_int, default=500, help="events per script call")
    ship.add_argument("--session-maxlen", type=_positive_int, default=10_000, metavar="N")
    ship.add_argument("--global-maxlen", type=_positive_int, default=1_000_000, metavar="N")
    ship.add_argument("--session-ttl", type=_positive_int, default=3600, metavar="SECONDS")
    ship.add_argument("--exact-trim", action="store_true", help="MAXLEN = instead of MAXLEN ~")
    ship.add_argument("--max-seconds", type=_positive_float, help=argparse.SUPPRESS)
    ship.set_defaults(handler=run_ship_command)


# -- file readers -----------------------------------------------------------------------------


def _read_errors(call: Callable[[], Any], path: str) -> Any:
    """Runs a reader, turning its errors into ``CliError``."""
    import opencode_addons as oa

    if os.path.isdir(path):
        raise CliError(f"{path} is a directory, not a store file", EXIT_USAGE)
    try:
        return call()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}", EXIT_USAGE) from None
    except PermissionError:
        raise CliError(f"permission denied: {path}", EXIT_USAGE) from None
    except oa.StoreLockedError as error:
        raise CliError(str(error), EXIT_LOCKED) from None
    except (ValueError, TypeError) as error:
        raise CliError(str(error), EXIT_USAGE) from None
    except OSError as error:
        raise CliError(str(error), EXIT_FAILED) from None


def run_stats_command(args: argparse.Namespace, out: TextIO) -> int:
    import opencode_addons as oa

    summary = dict(_read_errors(lambda: oa.file_stats(args.path), args.path))
    summary["path"] = os.fspath(summary.get("path", args.path))
    if args.json:
        out.write(_json_line(summary) + "\n")
    else:
        out.write(format_stats(summary))
    return EXIT_OK


def _format_time(ms: Optional[int]) -> str:
    if ms is None:
        return "-"
    moment = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    return f"{moment}.{ms % 1000:03d}Z ({ms})"


def format_stats(summary: dict[str, Any]) -> str:
    types: dict[str, int] = summary.get("types") or {}
    rows = [
        ("file", summary["path"]),
        ("file bytes", f"{summary.get('file_bytes', 0):,}"),
        ("events", f"{summary.get('events', 0):,}"),
        ("streams", f"{summary.get('streams', 0):,}"),
        ("types", f"{len(types):,}"),
        ("first event", _format_time(summary.get("first_timestamp"))),
        ("last event", _format_time(summary.get("last_timestamp"))),
        ("last seq", str(summary.get("last_seq"))),
        ("corrupt lines", f"{summary.get('corrupt_lines', 0):,}"),
        ("duplicate lines", f"{summary.get('duplicate_lines', 0):,}"),
        ("torn tail bytes", f"{summary.get('torn_tail_bytes', 0):,}"),
        ("unterminated last line", str(bool(summary.get("unterminated_last_line")))),
    ]
    segments: list[dict[str, Any]] = summary.get("segments") or []
    if len(segments) > 1:
        rows[0] = ("store", summary["path"])
        rows.insert(1, ("files", f"{len(segments):,}"))
    lines = _table(rows)
    if len(segments) > 1:
        lines.append("")
        lines.extend(_segment_table(segments))
    if types:
        lines.append("")
        ranked = sorted(types.items(), key=lambda item: (-item[1], item[0]))
        lines.extend(_table([("type", "events"), *((t, f"{n:,}") for t, n in ranked)]))
    return "\n".join(lines) + "\n"


def _segment_table(segments: Sequence[dict[str, Any]]) -> list[str]:
    """One line per file of the store, oldest first, then the totals."""
    header = ("segment", "bytes", "events", "first seq", "last seq", "damaged")
    rows = [header]
    for segment in segments:
        damaged = (
            int(segment.get("corrupt_lines") or 0)
            + int(segment.get("duplicate_lines") or 0)
            + (1 if segment.get("torn_tail_bytes") else 0)
        )
        rows.append(
            (
                os.path.basename(str(segment.get("path", ""))),
                f"{int(segment.get('file_bytes') or 0):,}",
                f"{int(segment.get('events') or 0):,}",
                str(segment.get("first_seq") or "-"),
                str(segment.get("last_seq") or "-") if segment.get("events") else "-",
                f"{damaged:,}",
            )
        )
    rows.append(
        (
            "total",
            f"{sum(int(s.get('file_bytes') or 0) for s in segments):,}",
            f"{sum(int(s.get('events') or 0) for s in segments):,}",
            "",
            "",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


def _table(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    return [f"{name.ljust(width)}  {value}" for name, value in rows]


def _query_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "stream_id": args.stream_id,
        "type": args.types,
        "actor": args.actor,
        "since": args.since,
        "until": args.until,
        "limit": args.limit,
        "newest_first": args.newest,
    }


def run_query_command(args: argparse.Namespace, out: TextIO) -> int:
    import opencode_addons as oa

    filters = _query_filters(args)
    if _source_is_redis(args):
        with _redis_reader(args) as reader:
            _write_events(_redis_call(lambda: reader.query(raw=True, **filters)), out)
        return EXIT_OK
    # The lines as the file holds them: no dict is built and nothing is re-encoded.
    _write_events(
        _read_errors(lambda: oa.read_events(args.path, raw=True, **filters), args.path), out
    )
    return EXIT_OK


# -- tail -------------------------------------------------------------------------------------


def _file_signature(path: str) -> Optional[tuple[int, int]]:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _newest(path: str, count: int) -> list[Any]:
    import opencode_addons as oa

    if count == 0:
        return []
    events = _read_errors(
        lambda: oa.read_events(path, limit=count, newest_first=True, raw=True), path
    )
    return list(reversed(events))


def _last_seq(path: str, events: Sequence[Any]) -> int:
    import opencode_addons as oa

    if events:
        return _seq_of(events[-1])
    summary = _read_errors(lambda: oa.file_stats(path), path)
    return int(summary.get("last_seq") or 0)


def run_tail_command(args: argparse.Namespace, out: TextIO) -> int:
    if _source_is_redis(args):
        return _redis_tail(args, out)
    if args.stream_id is not None:
        raise CliError("--stream-id needs --redis", EXIT_USAGE)
    events = _newest(args.path, args.lines)
    _write_events(events, out)
    if not args.follow:
        return EXIT_OK
    try:
        _follow(args, out, _last_seq(args.path, events))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _follow(args: argparse.Namespace, out: TextIO, last_seq: int) -> None:
    import opencode_addons as oa

    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
    printed = 0
    signature = _file_signature(args.path)
    last_read = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        time.sleep(args.interval)
        current = _file_signature(args.path)
        now = time.monotonic()
        if current is None or (current == signature and now - last_read < TAIL_FORCE_SECONDS):
            continue
        signature, last_read = current, now

        def newer(after: int = last_seq) -> list[Any]:
            return oa.read_events(args.path, after_seq=after, raw=True)

        fresh = _read_errors(newer, args.path)
        if args.max_events is not None:
            fresh = fresh[: args.max_events - printed]
        printed += _write_events(fresh, out)
        if fresh:
            last_seq = _seq_of(fresh[-1])
        if args.max_events is not None and printed >= args.max_events:
            return


# -- Redis ------------------------------------------------------------------------------------


def _source_is_redis(args: argparse.Namespace) -> bool:
    """Whether to read from Redis; exactly one of PATH and --redis must be given."""
    if args.redis is not None and args.path is not None:
        raise CliError("give either a store file or --redis URL, not both", EXIT_USAGE)
    if args.redis is None and args.path is None:
        raise CliError("give a store file or --redis URL", EXIT_USAGE)
    return args.redis is not None


def _redis_module() -> Any:
    try:
        from opencode_addons import redis_streams
    except ImportError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    return redis_streams


def _redis_call(call: Callable[[], Any]) -> Any:
    """Runs a Redis operation, turning its errors into ``CliError``."""
    redis_streams = _redis_module()
    try:
        return call()
    except redis_streams.RedisConfigError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    except redis_streams.RedisStreamError as error:
        raise CliError(str(error), EXIT_FAILED) from None
    except (ValueError, TypeError) as error:
        raise CliError(str(error), EXIT_USAGE) from None


def _redis_reader(args: argparse.Namespace) -> Any:
    redis_streams = _redis_module()
    reader = _redis_call(lambda: redis_streams.RedisEventReader(args.redis, prefix=args.prefix))
    _redis_call(reader.check)
    return reader


def _redis_tail(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    with _redis_reader(args) as reader:
        events, last_id = _redis_call(
            lambda: reader.latest(args.lines, stream_id=args.stream_id, raw=True)
        )
        _write_events(events, out)
        if not args.follow:
            return EXIT_OK

        async def follow() -> None:
            printed = 0
            async for line in reader.tail(args.stream_id, raw=True, last_id=last_id):
                printed += _write_events([line], out)
                if args.max_events is not None and printed >= args.max_events:
                    return

        async def bounded() -> None:
            try:
                await asyncio.wait_for(follow(), args.max_seconds)
            except asyncio.TimeoutError:
                pass

        try:
            _redis_call(lambda: asyncio.run(bounded()))
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def run_ship_command(args: argparse.Namespace, out: TextIO) -> int:
    import signal
    import threading

    redis_streams = _redis_module()
    if os.path.isdir(args.path):
        raise CliError(f"{args.path} is a directory, not a store file", EXIT_USAGE)
    if not os.path.exists(args.path):
        raise CliError(f"no such file: {args.path}", EXIT_USAGE)
    replicator = _redis_call(
        lambda: redis_streams.RedisReplicator(
            args.path,
            args.redis,
            prefix=args.prefix,
            host_id=args.host_id,
            session_maxlen=args.session_maxlen,
            global_maxlen=args.global_maxlen,
            batch=args.batch,
            session_ttl=args.session_ttl,
            exact_trim=args.exact_trim,
        )
    )
    try:
        _redis_call(replicator.check)
        if args.once:
            _redis_call(replicator.run_once)
        else:
            done = threading.Event()
            previous = None
            if threading.current_thread() is threading.main_thread():
                previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
            try:
                replicator.start()
                done.wait(args.max_seconds)
            except KeyboardInterrupt:
                pass
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
    finally:
        replicator.shutdown()
    stats = replicator.stats()
    out.write(
        f"shipped {stats['shipped']:,} events from {args.path} to {stats['url']} "
        f"(host {stats['host']}, at seq {stats['position']}, lost {stats['lost']:,}, "
        f"errors {stats['errors']:,})\n"
    )
    out.flush()
    return EXIT_OK


# -- soak -------------------------------------------------------------------------------------


class ProgressBar:
    """One line on a terminal, rewritten with ``\\r``."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, progress: Any) -> None:
        fraction = min(1.0, progress.events / max(1, progress.total))
        filled = int(fraction * self.WIDTH)
        rate = progress.events / progress.seconds if progress.seconds > 0 else 0.0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(
            f"\r[{bar}] {fraction:6.1%}  {progress.events:,}/{progress.total:,} events  "
            f"{rate:,.0f} ev/s  RSS {progress.rss / 2**20:,.1f} MiB  "
            f"disk {progress.disk / 2**20:,.1f} MiB "
        )
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def format_soak(result: Any) -> str:
    from opencode_addons.soak import check_description

    if not result.memory_checked:
        verdict = "NOT CHECKED (still filling at the end: " + ", ".join(result.filling) + ")"
    else:
        verdict = "PASS" if result.memory_ok else "FAIL"
    budget = result.config.max_disk_bytes
    disk_verdict = "PASS" if result.disk_ok else "FAIL"
    full_at = (
        f"{result.full_at_events:,} events (RSS {_mib(result.rss_at_full)})"
        if result.full_at_events is not None
        else "never in this run"
    )
    rows = [
        ("events", f"{result.events:,} in {result.seconds:,.1f} s"),
        ("events/s", f"{result.events_per_second:,.0f}"),
        ("sessions (concurrent)", f"{result.config.sessions:,}"),
        ("durability", result.config.durability),
        ("RSS at start", _mib(result.rss_start)),
        ("RSS at 10%", _mib(result.rss_at_10pct)),
        ("RSS at 20%", _mib(result.rss_at_20pct)),
        ("RSS at end", _mib(result.rss_end)),
        ("peak RSS", _mib(result.rss_peak)),
        ("history events", f"{result.history_events:,} (max {result.config.history:,})"),
        ("cache events", f"{result.cache_events:,} (max {result.config.cache:,})"),
        ("bytes held", f"{result.bytes_held:,}"),
        ("file bytes (active segment)", f"{result.file_bytes:,}"),
        ("disk bytes at end", f"{result.disk_bytes_end:,} ({_mib(result.disk_bytes_end)})"),
        ("disk bytes peak", f"{result.disk_bytes_peak:,} ({_mib(result.disk_bytes_peak)})"),
        ("disk budget", "unbounded" if budget is None else f"{budget:,} ({_mib(budget)})"),
        ("segment size", f"{result.config.max_segment_bytes:,}"),
        ("segments dropped", f"{result.segments_dropped:,} ({result.events_dropped:,} events)"),
        ("everything full at", full_at),
        ("shutdown_all", f"{result.shutdown_seconds * 1000:,.1f} ms ({_ok(result.shutdown_ok)})"),
    ]
    lines = _table(rows)
    for name, stats in result.components.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(_table([(key, _short(value)) for key, value in stats.items()] or [("-", "")]))
    lines.append("")
    lines.append(f"memory check: {check_description()}")
    lines.append(f"RSS growth from full to end: {result.rss_growth:+.2%}  {verdict}")
    limit = result.disk_limit
    lines.append(
        f"disk peak {_mib(result.disk_bytes_peak)} vs limit "
        f"{'none' if limit is None else _mib(limit)}: {disk_verdict}"
    )
    return "\n".join(lines) + "\n"


def _ok(flag: bool) -> str:
    return "ok" if flag else "problems"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else _json_line(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _soak_config(args: argparse.Namespace) -> Any:
    from opencode_addons.soak import SoakConfig

    return SoakConfig(
        events=args.events,
        sessions=args.sessions,
        directory=args.dir,
        durability=args.durability,
        history=args.history,
        cache=args.cache,
        seed=args.seed,
        max_segment_bytes=args.max_segment_bytes,
        max_disk_bytes=args.max_disk_bytes or None,
    )


def run_soak_command(args: argparse.Namespace, out: TextIO) -> int:
    import opencode_addons as oa
    from opencode_addons import soak

    if args.plot:
        try:
            soak.require_matplotlib()
        except soak.PlotUnavailableError as error:
            raise CliError(str(error), EXIT_USAGE) from None
    show_progress = not args.quiet and sys.stderr.isatty()
    bar = ProgressBar(sys.stderr) if show_progress else None
    try:
        result = soak.run_soak(_soak_config(args), bar)
    except oa.StoreLockedError as error:
        raise CliError(str(error), EXIT_LOCKED) from None
    except (oa.StoreError, OSError) as error:
        raise CliError(str(error), EXIT_FAILED) from None
    finally:
        if bar is not None:
            bar.finish()
    if args.plot:
        try:
            soak.write_plot(result, args.plot)
        except OSError as error:
            raise CliError(f"cannot write {args.plot}: {error}", EXIT_USAGE) from None
    out.write(_json_line(result.to_dict()) + "\n" if args.json else format_soak(result))
    return EXIT_OK if result.ok else EXIT_FAILED


# -- record -----------------------------------------------------------------------------------


def _add_record(commands: Any) -> None:
    record = commands.add_parser(
        "record",
        help="record a running OpenCode server's events, with the orchestration attached",
        description="Connect to an OpenCode server's event stream (URL/event, or "
        "URL/global/event with --global), bridge every event into a durable stream with the "
        "orchestration attached, reconnect with backoff; SIGINT/SIGTERM shut everything down "
        "in order. Needs the 'opencode' extra (httpx, httpx-sse).",
    )
    record.add_argument("url", help="the server, e.g. http://127.0.0.1:4096")
    record.add_argument(
        "--store", default=None, help="store file (default: .opencode/durable_stream.jsonl)"
    )
    record.add_argument(
        "--global", dest="global_events", action="store_true", help="every directory's events"
    )
    record.add_argument(
        "--max-reconnects",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="give up after N reconnects (0: exit when the server closes the stream); "
        "default: never",
    )
    record.add_argument("--durability", choices=DURABILITY_MODES, default="flush")
    record.add_argument("--history", type=_positive_int, default=100_000, help="history size")
    record.add_argument("--cache", type=_positive_int, default=50_000, help="cache size")
    record.add_argument("--json", action="store_true", help="print the final figures as JSON")
    record.add_argument("--quiet", action="store_true", help="no live status line")
    record.add_argument("--backoff", type=_positive_float, default=0.5, help=argparse.SUPPRESS)
    record.set_defaults(handler=run_record_command)


def run_record_command(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio
    import logging

    import opencode_addons as oa
    from opencode_addons import opencode

    try:
        opencode.require_httpx()
    except ImportError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    from opencode_addons.durable_stream import DEFAULT_STORE_PATH
    from opencode_addons.recorder import RecordConfig, run_recorder, wants_live_status

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="opencode-addons record: %(message)s")
    config = RecordConfig(
        url=args.url,
        store=args.store or DEFAULT_STORE_PATH,
        global_events=args.global_events,
        max_reconnects=args.max_reconnects,
        durability=args.durability,
        history=args.history,
        cache=args.cache,
        backoff=args.backoff,
    )
    status = sys.stderr if not args.quiet and wants_live_status(sys.stderr) else None
    try:
        code, summary = asyncio.run(run_recorder(config, status=status))
    except opencode.RecorderError as error:
        raise CliError(str(error), EXIT_FAILED) from None
    except oa.StoreLockedError as error:
        raise CliError(str(error), EXIT_LOCKED) from None
    except (oa.StoreError, OSError) as error:
        raise CliError(str(error), EXIT_FAILED) from None
    out.write(_json_line(summary) + "\n" if args.json else format_record(summary))
    out.flush()
    return code


def format_record(summary: dict[str, Any]) -> str:
    recorder, bridge, stream = summary["recorder"], summary["bridge"], summary["stream"]
    rows = [
        ("server", str(summary["url"])),
        ("events received", f"{bridge['received']:,}"),
        ("stream events stored", f"{bridge['stored']:,}"),
        ("duplicates dropped", f"{bridge['duplicates']:,}"),
        ("bad input", f"{bridge['bad_input'] + recorder['bad_frames']:,}"),
        ("connections", f"{recorder['connections']:,} ({recorder['reconnects']:,} reconnects)"),
        ("cut streams / HTTP errors", f"{recorder['cut_streams']:,} / {recorder['http_errors']:,}"),
        ("sessions open", f"{bridge['sessions']:,}"),
        ("pending checkpoints", f"{len(summary['pending_checkpoints']):,}"),
        ("store", f"{stream.get('file_bytes', 0):,} bytes, next seq {stream.get('next_seq')}"),
        ("shutdown", f"{summary['shutdown_seconds'] * 1000:,.1f} ms"),
    ]
    return "\n".join(_table(rows)) + "\n"


# -- entry point ------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args, sys.stdout))
    except CliError as error:
        sys.stderr.write(f"opencode-addons {args.command}: error: {error}\n")
        return error.code
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly without a second error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
