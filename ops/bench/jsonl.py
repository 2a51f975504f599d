"""Reading JSON-lines output (`nexus sim`, the binaries' JSON logs): the
objects of a file, one per line, other lines (progress text) passed over."""

import json
import sys


def objects(path, strict=True):
    """Yields (line number, object) for every line that starts with '{'.
    A line that does not parse ends the program when `strict`, otherwise it
    is reported on stderr and skipped (a log cut off mid-line)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    sys.exit(f"{path}:{n}: not JSON: {e}")
                print(f"{path}:{n}: not JSON ({e}); skipped", file=sys.stderr)
