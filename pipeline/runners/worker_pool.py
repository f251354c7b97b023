"""Beam's Python SDK worker pool in this process, listening on 127.0.0.1.

``python -m pipeline.runners.worker_pool PORT`` runs one as a process of its own
until it is stopped (a Flink cluster's pool beside a TaskManager), starting
each SDK worker as a process of its own, as Beam's own pool does there, so
that a worker that dies takes only itself down. gRPC sets SO_REUSEPORT, so
several such processes can share PORT; each worker a TaskManager asks for
then starts in one of them.
"""

import signal
import sys
import threading
from typing import Optional

# The SDK harness's state cache (the stateful steps read their state through it)
# unless ``--max_cache_memory_usage_mb`` sets it: off, as in Beam's own default.
# The cache weighs every value it keeps (objsize walks it, about 1.5 ms a write),
# which cost more than the state reads it saves. Story window benchmark, 2,000
# articles 216 s apart, 100 MB against off: Prism 495 s against 262 s, Flink
# 323 s against 233 s, and the Python worker smaller with it off on both.
STATE_CACHE_MB = 0

class LocalWorkerPool:
    """Beam's Python SDK worker pool, in this process, on 127.0.0.1 (a context manager).
    Its SDK workers are threads of this process, or with ``worker_processes``
    child processes (``python -c ...``, run in this process's folder)."""

    def __init__(self, state_cache_mb: int = STATE_CACHE_MB, port: int = 0,
                 worker_processes: bool = False):
        self.address: Optional[str] = None
        self.state_cache_mb = state_cache_mb
        self.port = port
        self.worker_processes = worker_processes
        self._server = None

    def __enter__(self) -> "LocalWorkerPool":
        import grpc
        from apache_beam.portability.api import beam_fn_api_pb2_grpc
        from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
        from apache_beam.utils import thread_pool_executor
        # The settings LOOPBACK uses, but the address (LOOPBACK binds [::]).
        self._server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                                   options=[("grpc.http2.max_pings_without_data", 0),
                                            ("grpc.http2.max_ping_strikes", 0)])
        port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
            BeamFnExternalWorkerPoolServicer(use_process=self.worker_processes,
                                             state_cache_size=self.state_cache_mb << 20,
                                             data_buffer_time_limit_ms=-1), self._server)
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1)


if __name__ == "__main__":
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalWorkerPool(port=int(sys.argv[1]), worker_processes=True) as pool:
        print(f"worker pool at {pool.address}", flush=True)
        stopped.wait()
