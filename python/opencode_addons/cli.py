"""The ``opencode-addons`` command: ``soak``, ``stats``, ``query`` and ``tail``.

Exit codes: 0 success; 1 the soak's memory check failed or a store error; 2 bad arguments or a
file that cannot be read; 3 the store file is locked by another writer. Errors are one line on
stderr, never a traceback.
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
    return parser


def _add_soak(commands: Any) -> None:
    soak = commands.add_parser(
        "soak",
        help="simulate a long-running agent host and check that memory stays flat",
        description="Simulate a long-running agent host on the real stream and orchestrator; "
        "exit 1 if RSS grows by more than 5% between 20% and 100% of the run.",
    )
    soak.add_argument("--events", type=_positive_int, default=1_000_000, help="default 1000000")
    soak.add_argument("--sessions", type=_positive_int, default=200, help="concurrent sessions")
    soak.add_argument("--dir", help="keep the store here (default: a temporary directory)")
    soak.add_argument("--durability", choices=DURABILITY_MODES, default="flush")
    soak.add_argument("--history", type=_positive_int, default=100_000, help="history size")
    soak.add_argument("--cache", type=_positive_int, default=50_000, help="cache size")
    soak.add_argument("--seed", type=int, default=7, help=argparse.SUPPRESS)
    soak.add_argument(
        "--compress-history", action="store_true", help="compress the history in memory (zstd)"
    )
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
    query = commands.add_parser("query", help="matching events of a store file as JSON lines")
    query.add_argument("path")
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
    tail.add_argument("path")
    tail.add_argument("-n", "--lines", type=_non_negative_int, default=10, metavar="N")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--max-seconds", type=_positive_float, help=argparse.SUPPRESS)
    tail.add_argument("--max-events", type=_positive_int, help=argparse.SUPPRESS)
    tail.add_argument(
        "--interval", type=_positive_float, default=TAIL_POLL_SECONDS, help=argparse.SUPPRESS
    )
    tail.set_defaults(handler=run_tail_command)


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
    lines = _table(rows)
    if types:
        lines.append("")
        ranked = sorted(types.items(), key=lambda item: (-item[1], item[0]))
        lines.extend(_table([("type", "events"), *((t, f"{n:,}") for t, n in ranked)]))
    return "\n".join(lines) + "\n"


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
            f"{rate:,.0f} ev/s  RSS {progress.rss / 2**20:,.1f} MiB "
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

    verdict = "PASS" if result.memory_ok else "FAIL"
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
        (
            "bytes stored",
            f"{result.bytes_stored:,}"
            + (" (compressed)" if result.config.compress_history else ""),
        ),
        ("file bytes", f"{result.file_bytes:,}"),
        ("shutdown_all", f"{result.shutdown_seconds * 1000:,.1f} ms ({_ok(result.shutdown_ok)})"),
    ]
    lines = _table(rows)
    for name, stats in result.components.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(_table([(key, _short(value)) for key, value in stats.items()] or [("-", "")]))
    lines.append("")
    lines.append(f"memory check: {check_description()}")
    lines.append(f"RSS growth 20% -> 100%: {result.rss_growth:+.2%}  {verdict}")
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
        compress_history=args.compress_history,
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
    return EXIT_OK if result.memory_ok else EXIT_FAILED


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
