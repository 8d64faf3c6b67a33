# A known Python call chain: <module> -> main -> outer -> middle -> inner -> Worker.leaf_hot
# (75% of the CPU) and Worker.leaf_cold (25%), for SECONDS of wall-clock time.
#
# The split is fixed by the work per call (leaf_hot runs 3 times the iterations of
# leaf_cold each round, with the same loop body), so it does not depend on the CPU's speed.
# Prints nothing. Valid on CPython 2.7 and 3.6 to 3.13 (the unsupported-version test runs it
# on an old interpreter).
import sys
import time

# Iterations of leaf_cold per round (leaf_hot does 3 times as many): a few milliseconds, so
# the calls between rounds cost nothing measurable.
ROUND = 20000

try:
    clock = time.monotonic
except AttributeError:  # 2.7
    clock = time.time


class Worker(object):
    def __init__(self):
        self.state = 1

    def leaf_hot(self, n):
        x = self.state
        for _ in range(n):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        self.state = x

    def leaf_cold(self, n):
        x = self.state
        for _ in range(n):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        self.state = x


def inner(worker, n):
    worker.leaf_hot(3 * n)
    worker.leaf_cold(n)


def middle(worker, n):
    inner(worker, n)


def outer(worker, n):
    middle(worker, n)


def main(seconds):
    worker = Worker()
    end = clock() + seconds
    while clock() < end:
        outer(worker, ROUND)


if __name__ == "__main__":
    main(float(sys.argv[1]))
