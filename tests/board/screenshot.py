"""Render the board to a PNG from real data: `make board-screenshot` -> docs/board.png.

A local runtime of its own (free ports, its own embedded DynamoDB) is filled by sites working over
HTTP (tests/board/runtime_data.py: several workflows, jobs done, failed with their errors, claimed,
one lease near its end, one cancelled); the board reads its tables as `jobtriggers board` does and
is shot in headless Chromium, so the picture is exactly what an operator's browser shows.

    python -m tests.board.screenshot docs/board.png [--dark] [--width 1440] [--full-page]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

# The seed load and the operator's cancel log as the service does, at INFO, in this process: quiet
# (set before the package's logger is made, on import).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

from jobtriggers.board.cli import source_label
from jobtriggers.board.server import BoardConfig, BoardServer, create_app
from jobtriggers.board.tables import open_tables
from jobtriggers.local.runtime import LocalConfig, LocalRuntime
from tests.board.browser import chromium_context
from tests.board.runtime_data import LEASE_NEAR_END_SECONDS, fill, near_end_seed

# The board marks a lease under a minute from its end; shoot a little after it crossed that.
NEAR_END_AFTER_SECONDS = LEASE_NEAR_END_SECONDS - 55


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--path", default="/", help="the page to shoot, e.g. /?status=failed")
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="board-shot-") as tmp, near_end_seed(Path(tmp)) as seed:
        config = LocalConfig(
            port=0,
            dynamodb_port=0,
            seed_dir=seed,
            max_workers=2,
            log_level="WARNING",
            echo_function_logs=False,
        )
        with LocalRuntime(config) as runtime:
            print(f"filling the local runtime at {runtime.base_url} ...")
            filled = fill(runtime)
            source, actions = open_tables(operator="screenshot")
            app = create_app(source, actions, BoardConfig(source_label(runtime.dynamodb_endpoint, None)))
            wait = NEAR_END_AFTER_SECONDS - (time.monotonic() - filled.short_lease_claimed_at)
            if wait > 0:
                time.sleep(wait)
            with (
                BoardServer(app) as server,
                chromium_context(
                    width=args.width, height=args.height, color_scheme="dark" if args.dark else "light"
                ) as context,
            ):
                page = context.new_page()
                page.goto(server.url + args.path)
                page.wait_for_load_state("networkidle")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=args.full_page)
            source.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
