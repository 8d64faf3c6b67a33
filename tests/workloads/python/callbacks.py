# Python -> C -> Python, for SECONDS of wall-clock time: caller sorts with a key function
# (sorted's C code calls keyfunc) and folds with functools.reduce (its C code calls
# reducer). Both callbacks do pure-Python work, so nearly all the time is in them, under
# native frames, under caller. Prints nothing.
import functools
import sys
import time

DATA = list(range(200, 0, -1))
WORK = 50


def keyfunc(item):
    x = item
    for _ in range(WORK):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def reducer(total, item):
    x = item
    for _ in range(WORK):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return (total + x) & 0x7FFFFFFF


def caller(data):
    ordered = sorted(data, key=keyfunc)
    return functools.reduce(reducer, ordered, 0)


def main(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        caller(DATA)


if __name__ == "__main__":
    main(float(sys.argv[1]))
