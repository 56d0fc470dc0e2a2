"""Run the inbox tailer alone: ``python -m insan_edge.ingest_main --config C --state-dir S``.

The daemon runs the same tailer with the Presidio scrubber; this stand-alone loop is for tests
and tools and keeps no free text at all (``--redact-text``: every string becomes a marker).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from insan_edge import logs
from insan_edge.config import load_config
from insan_edge.errors import ConfigError
from insan_edge.ingest import InboxTailer
from insan_edge.intake import redact_all
from insan_edge.store import Store

log = logging.getLogger("insan_edge.ingest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insan_edge.ingest_main", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, help="default: the config's state directory")
    parser.add_argument("--inbox", type=Path, help="default: the config's, or STATE_DIR/inbox")
    parser.add_argument("--redact-text", action="store_true", help="required: see above")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="read what is there, then exit")
    args = parser.parse_args(argv)
    if not args.redact_text:
        parser.error("the Presidio scrubber runs in the daemon; this tool needs --redact-text")
    logs.setup("info")
    try:
        config = load_config(args.config).config
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    state = args.state_dir or config.system.paths.state_dir
    inbox = args.inbox or config.system.paths.inbox or state / "inbox"
    store = Store(state / "insan-edge.db")
    store.sync_families(dict(config.families))
    tailer = InboxTailer(
        store, inbox, lambda: config, redact_all, config.system.privacy.max_event_bytes
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        tailer.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(logs.kv("ingest.started", inbox=inbox))
    try:
        while not stopping:
            tailer.poll()
            if args.once:
                break
            tailer.wait(args.interval)
    finally:
        tailer.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
