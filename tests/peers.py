"""Simulated devices as separate processes, started through the CLI a maintainer uses.

Each peer prints where it serves on its first stdout line (``gate sim board``: the pty;
``gate sim camera`` / ``gate sim reader``: the MJPEG URL). ``Peer.kill()`` is a pulled
plug; ``Peer.restart()`` brings the same device back where it was. The launcher lives in
``gate.simlane.processes`` (``gate bench lane`` uses it too).
"""

from gate.simlane.processes import GATE, LaneProcess, SimPeer

Peer = SimPeer

__all__ = ["GATE", "LaneProcess", "Peer"]
