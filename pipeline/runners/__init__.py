"""Local streaming runners, fetched with ordinary clients and bound to 127.0.0.1.

Beam downloads Prism from GitHub and Flink's job server from Maven at run
time, which fails offline, and Prism's job server and Beam's LOOPBACK worker
pool listen on every interface. So newsloom prepares these runs itself:

* ``prism_binary()`` builds Prism from the Go module proxy, at the installed
  Beam version, with its one listener on 127.0.0.1. Upstream has no flag for
  the address, so the build vendors the module and changes that one
  ``net.Listen`` line; it is cached under ``~/.cache/newsloom/`` (about 4
  minutes the first time).
* Prism runs with its dynamic splits turned off (``PRISM_NO_SPLITS``): when
  it splits a bundle that makes no progress for a moment, it frees the keys
  of the elements it takes back while the SDK still works on that bundle, so
  a second bundle of one key runs beside the first and whichever ends last
  overwrites the other's state (Beam 2.77, ``stageState.splitBundle`` in
  ``prism/internal/engine/elementmanager.go``). On a stream this lost about
  one article in a hundred without a trace; the cost is parallelism within a
  stage, which newsloom's keyed steps do not need. (Beam 2.78's ``splitBundle``
  keeps such keys with the first bundle; splits stay off until that is tried.)
* ``LocalWorkerPool`` is the LOOPBACK worker pool (SDK harnesses as threads of
  this process), listening on 127.0.0.1; a pipeline reaches it with
  ``--environment_type=EXTERNAL --environment_config=127.0.0.1:PORT``.
* ``flink_job_server_jar()`` assembles Beam's Flink job server (Flink 1.19,
  an embedded ``[local]`` cluster per job) from Maven Central with ``mvn``:
  Beam publishes it as one shaded jar, which the Maven Central reachable here
  lacks, so newsloom resolves ``beam-runners-flink-1.19`` and its dependencies
  into a folder and writes a launcher jar whose manifest names them. The
  newest Beam release whose Flink runner resolves whole there is
  ``FLINK_JOB_SERVER_VERSION``; the job server speaks Beam's portable API, which
  the installed Python SDK uses across versions.
* A local Flink (``[local]``) listens on 127.0.0.1 only: its own servers by
  configuration (``FLINK_CONF_DIR``), and Beam's Java gRPC servers, which
  ignore any host they are given, through ``loopback_bind.c``, a ``bind()``
  wrapper preloaded into that JVM alone (``--job_server_java_launcher``).
* ``local_runner`` adds all of this to a Prism or Flink run's arguments unless
  given.
"""

import os
from pathlib import Path

# Where built and assembled runner parts are kept between runs.
CACHE_DIR = Path(os.environ.get("NEWSLOOM_CACHE", Path.home() / ".cache" / "newsloom"))
