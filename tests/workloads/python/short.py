# A short-lived, CPU-busy Python process: short_lived_leaf spins for SECONDS of wall-clock
# time (0.3 when not given), then the process exits. Prints nothing.
import sys
import time

ROUND = 2000


def short_lived_leaf(end):
    x = 1
    while time.monotonic() < end:
        for _ in range(ROUND):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


if __name__ == "__main__":
    short_lived_leaf(time.monotonic() + (float(sys.argv[1]) if len(sys.argv) > 1 else 0.3))
