"""The floor of a verifier written in Python on this machine: an interpreter that does nothing
but hash the files it is given, with airlock's own reading and hashing (`rangehash`, the chunk
size of `earlyhash`) on two threads, largest file first. No manifest, no signature, no checks.

bench/scale.py times it as a process beside `airlock bundle verify` and two `openssl dgst`
processes over the same blob files: floor / openssl says what Python's SHA-256 path and its start
cost on their own; verify / floor says what airlock adds on top of that.

    python bench/hashfloor.py FILE...
"""

from __future__ import annotations

import os
import sys
import threading

from airlock.earlyhash import CHUNK
from airlock.rangehash import hash_ranges


def main(paths: list[str]) -> int:
    todo = sorted(paths, key=os.path.getsize)  # popped from the end: largest first
    lock = threading.Lock()
    total = [0]

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            _, n = hash_ranges([(path, 0, os.path.getsize(path))], chunk=CHUNK)
            with lock:
                total[0] += n

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(total[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
