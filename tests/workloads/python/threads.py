# Three threads, each spinning in its own chain for SECONDS of wall-clock time:
# chain_a_outer -> chain_a_middle -> chain_a_leaf, and the same for b and c. The GIL switches
# between them; the main thread waits in join. Prints nothing.
import sys
import threading
import time

ROUND = 5000


def chain_a_leaf(end):
    x = 1
    while time.monotonic() < end:
        for _ in range(ROUND):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def chain_a_middle(end):
    return chain_a_leaf(end)


def chain_a_outer(end):
    return chain_a_middle(end)


def chain_b_leaf(end):
    x = 2
    while time.monotonic() < end:
        for _ in range(ROUND):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def chain_b_middle(end):
    return chain_b_leaf(end)


def chain_b_outer(end):
    return chain_b_middle(end)


def chain_c_leaf(end):
    x = 3
    while time.monotonic() < end:
        for _ in range(ROUND):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def chain_c_middle(end):
    return chain_c_leaf(end)


def chain_c_outer(end):
    return chain_c_middle(end)


def main(seconds):
    end = time.monotonic() + seconds
    threads = [threading.Thread(target=chain, args=(end,)) for chain in (chain_a_outer, chain_b_outer, chain_c_outer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(float(sys.argv[1]))
