"""Free TCP ports on 127.0.0.1, for the local servers newsloom starts (a Kafka
broker, a Flink cluster)."""

import socket
from typing import Optional


def free_port(avoid: Optional[int] = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, other than ``avoid``."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != avoid:
            return port
