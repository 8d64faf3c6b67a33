# Python recursion 500 frames deep (<module> -> main -> recurse x 498 -> bottom), spinning in
# bottom for SECONDS of wall-clock time. Prints nothing.
import sys
import time

DEPTH = 500
ROUND = 5000


def bottom(end):
    x = 1
    while time.monotonic() < end:
        for _ in range(ROUND):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def recurse(level, end):
    if level <= 1:
        return bottom(end)
    return recurse(level - 1, end)


def main(seconds):
    # <module> and main are two of the 500 frames; recurse makes 497 more and calls bottom.
    return recurse(DEPTH - 3, time.monotonic() + seconds)


if __name__ == "__main__":
    sys.setrecursionlimit(DEPTH + 1000)
    main(float(sys.argv[1]))
