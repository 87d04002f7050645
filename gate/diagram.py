"""``gate diagram``: the lane's state diagram, drawn from the machine itself.

The Mermaid text is generated from the ``transitions`` machine's own states and
transitions, so the picture in the README cannot drift from the code: a test compares
them. No graphviz needed; GitHub and most Markdown viewers render Mermaid.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transitions import Machine

#: Triggers with many sources are drawn once, from a note, to keep the picture readable.
_OVERLAY_TRIGGERS = ("emergency_raised", "maintenance_started", "service_lost",
                     "callback_failed")


def _name(callback: Any) -> str:
    return callback if isinstance(callback, str) else getattr(callback, "__name__", "?")


def machine_edges(machine: Machine) -> Iterator[tuple[str, str, str, str]]:
    """Every (source, dest, trigger, guard) of the machine; dest == source for internal."""
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                guards = [("" if c.target else "!") + _name(c.func) for c in t.conditions]
                yield source, t.dest if t.dest is not None else source, trigger, " & ".join(
                    guards)


def mermaid(machine: Machine, *, fold_overlays: bool = True) -> str:
    """Mermaid ``stateDiagram-v2`` text of ``machine``.

    With ``fold_overlays`` a trigger that leaves from (nearly) every state is drawn from a
    single pseudo-state ``any`` instead of one arrow per source.
    """
    states = list(machine.states)
    lines = ["stateDiagram-v2", f"    [*] --> {machine.initial}"]
    lines += [f"    state \"{s}\" as {s}" for s in states]
    folded: set[str] = set()
    if fold_overlays:
        for trigger in _OVERLAY_TRIGGERS:
            event = machine.events.get(trigger)
            if event is None:
                continue
            sources = [s for s in event.transitions if event.transitions[s]]
            dests = {t.dest for s in sources for t in event.transitions[s]}
            if len(sources) >= len(states) - 4 and len(dests) == 1:
                folded.add(trigger)
                missing = [s for s in states if s not in sources]
                note = f" (not from {', '.join(missing)})" if missing else ""
                lines.append(f"    any --> {dests.pop()} : {trigger}{note}")
    seen: set[str] = set()
    for source, dest, trigger, guard in machine_edges(machine):
        if trigger in folded:
            continue
        label = f"{trigger} [{guard}]" if guard else trigger
        line = f"    {source} --> {dest} : {label}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    if folded:
        lines.append("    state \"any state\" as any")
    return "\n".join(lines) + "\n"


def lane_mermaid() -> str:
    from gate.lane import build_machine

    return mermaid(build_machine(None))


def lane_markdown() -> str:
    """The block the README and docs/lane.md carry."""
    return "```mermaid\n" + lane_mermaid() + "```\n"


_BLOCK = re.compile(r"```mermaid\nstateDiagram-v2\n.*?```\n", re.DOTALL)


def update_markdown(path: Path) -> bool:
    """Replace the lane's diagram block in a Markdown file; True when it changed."""
    text = path.read_text(encoding="utf-8")
    if not _BLOCK.search(text):
        raise ValueError(f"{path}: no ```mermaid stateDiagram-v2 block to replace")
    new = _BLOCK.sub(lambda _: lane_markdown(), text, count=1)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "diagram", help="print the lane's state diagram (Mermaid), drawn from the machine")
    parser.add_argument("--markdown", action="store_true",
                        help="wrap it in a ```mermaid block for Markdown")
    parser.add_argument("--update", metavar="FILE", type=Path, action="append", default=[],
                        help="replace the diagram block in this Markdown file (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.update:
        for path in args.update:
            try:
                changed = update_markdown(path)
            except (OSError, ValueError) as exc:
                print(f"gate diagram: {exc}", file=sys.stderr)
                return 1
            print(f"{path}: {'updated' if changed else 'up to date'}")
        return 0
    print(lane_markdown() if args.markdown else lane_mermaid(), end="")
    return 0
