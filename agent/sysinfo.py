"""Facts about the host the agent reports in Hello.

Every function here is cheap, blocking and never raises: a fact that cannot be
read is reported empty (0 or ``""``) rather than keeping the agent from joining.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("lmstack.agent.sysinfo")

_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    cpu_count: int
    memory_total_bytes: int
    os: str


def host_info() -> HostInfo:
    return HostInfo(
        hostname=socket.gethostname(),
        cpu_count=os.cpu_count() or 0,
        memory_total_bytes=memory_total_bytes(),
        os=platform.platform(),
    )


def memory_total_bytes(meminfo: Path = _MEMINFO) -> int:
    """Physical memory: ``/proc/meminfo`` on Linux, ``sysconf`` elsewhere."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                # "MemTotal:       65843064 kB"
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        logger.debug("cannot read %s; falling back to sysconf", meminfo)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 0


def primary_ip(controller_host: str) -> str:
    """The local address the route to the controller leaves from.

    Connecting a UDP socket sends no packet; it only makes the kernel pick
    the outgoing interface, which is the address peers can reach us on.
    """
    try:
        family = socket.AF_INET6 if ":" in controller_host.strip("[]") else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((controller_host.strip("[]"), 9))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
