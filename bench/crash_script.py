#!/usr/bin/env python3
"""A trainer that crashes on purpose, for bench/relaunch_gap.py.

Usage: crash_script.py TIMES_FILE CRASHES

First thing after interpreter start-up (only os, sys and time are imported) it appends
`start <time.time()>` to TIMES_FILE. If it has started at most CRASHES times so far, it
appends `exit <time.time()>` and dies with exit code 1 (os._exit: no interpreter
teardown); the (CRASHES+1)-th start exits 0. So a launcher that relaunches it leaves
CRASHES exit->start gaps in the file.
"""

import os
import sys
import time

if __name__ == "__main__":
    path, crashes = sys.argv[1], int(sys.argv[2])
    with open(path, "a") as fh:
        fh.write(f"start {time.time()!r}\n")
    with open(path) as fh:
        starts = sum(1 for line in fh if line.startswith("start "))
    if starts <= crashes:
        with open(path, "a") as fh:
            fh.write(f"exit {time.time()!r}\n")
        os._exit(1)
    os._exit(0)
