"""Render the board to a PNG: `make board-screenshot` -> docs/board.png.

For now from the realistic in-memory dataset (tests/board/dataset.py), served by the board's own server
and shot in headless Chromium, so the picture is exactly what an operator's browser shows.

    python -m tests.board.screenshot docs/board.png [--dark] [--width 1440]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from jobtriggers.board.server import BoardConfig, BoardServer, create_app
from tests.board.browser import chromium_context
from tests.board.dataset import nmdc_board


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--path", default="/", help="the page to shoot, e.g. /?status=failed")
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args()

    board = nmdc_board(datetime.now(UTC))
    app = create_app(board, board, BoardConfig(source_label="demo data · NMDC registry (seed/)"))
    with (
        BoardServer(app) as server,
        chromium_context(
            width=args.width, height=args.height, color_scheme="dark" if args.dark else "light", scale=1
        ) as context,
    ):
        page = context.new_page()
        page.goto(server.url + args.path)
        page.wait_for_load_state("networkidle")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=args.full_page)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
