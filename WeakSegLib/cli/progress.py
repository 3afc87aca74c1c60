"""Progress for people (a tqdm bar on stderr) or machines (JSON lines on stdout)."""

from __future__ import annotations

import json
import sys


class ProgressPrinter:
    """A ``progress(event: dict)`` callback of the library turned into output.

    ``kind``: ``"bar"`` (a tqdm bar on stderr, for people), ``"jsonl"`` (one JSON object per event on stdout,
    for the Slicer worker and scripts) or ``"none"``.
    """

    def __init__(self, kind: str = "bar"):
        self.kind = kind
        self._bar = None
        self._finished = False

    def __call__(self, event: dict) -> None:
        if self.kind == "jsonl":
            print(json.dumps(event), flush=True)
            return
        if self.kind == "none" or self._finished:     # one bar per run: events after 100 % are not drawn
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=100, file=sys.stderr, unit="%", dynamic_ncols=True, mininterval=0.5,
                             bar_format="{l_bar}{bar}| {n:.1f}% [{elapsed}<{remaining}]{postfix}")
        fraction = min(max(float(event.get("fraction", 0.0)), 0.0), 1.0)
        self._bar.set_postfix_str(str(event.get("message", ""))[:60], refresh=False)
        self._bar.update(100.0 * fraction - self._bar.n)
        if fraction >= 1.0:
            self._finished = True
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
