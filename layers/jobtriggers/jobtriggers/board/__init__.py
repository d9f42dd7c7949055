"""`jobtriggers board`: a live web page on the operator's machine that shows and steers every job.

A tool, like cli/: the service never imports it, and its dependencies (Starlette, uvicorn, Jinja2) are
the `board` extra, not the Lambda layer's. The page reads through a small port (`port.BoardSource`,
`port.BoardActions`) so that it can be built and tested apart from the tables.
"""
