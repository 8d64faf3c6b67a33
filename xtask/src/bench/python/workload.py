"""Python workloads for `cargo xtask bench --python-only`; each runs for a wall-clock time.

    deep SECONDS DEPTH        a stack of DEPTH Python frames (<module>, main, descend...,
                              spin), spinning in the innermost one
    chain SECONDS             a fixed unit of work (Driver.run -> Stage.process x3 ->
                              Worker.leaf_hot) in a loop; prints the units done at exit
    many SECONDS COUNT SLICE_MS PREFIX
                              COUNT distinct generated functions (PREFIX_0 ... in a generated
                              module), each called for SLICE_MS in rotation until the
                              deadline; prints the functions created and the passes made,
                              then stays a second so the last samples' code objects can be read
"""

import sys
import time

clock = time.perf_counter


def spin(deadline):
    n = 0
    while clock() < deadline:
        for i in range(1000):
            n += i
    return n


def descend(depth, deadline):
    # <module>, main and spin are the three frames besides these.
    if depth <= 3:
        return spin(deadline)
    result = descend(depth - 1, deadline)
    return result + 1


class Worker:
    def leaf_hot(self, n):
        total = 0
        for i in range(n):
            total += i * i
        return total


class Stage:
    def __init__(self, worker):
        self.worker = worker

    def process(self, level):
        if level == 0:
            return self.worker.leaf_hot(2000)
        return self.process(level - 1) + 1


class Driver:
    def __init__(self):
        self.stage = Stage(Worker())

    def run(self):
        return self.stage.process(3)


def chain(seconds):
    deadline = clock() + seconds
    driver = Driver()
    units = 0
    while clock() < deadline:
        for _ in range(10):
            driver.run()
        units += 10
    print(units)


# Each generated function spins until its deadline; distinct names, lines and code objects.
TEMPLATE = """
def {name}(deadline, clock=clock):
    n = {index}
    while clock() < deadline:
        n += 1
    return n
"""


def many(seconds, count, slice_ms, prefix):
    deadline = clock() + seconds
    namespace = {"clock": clock}
    functions = []
    chunk = 1000
    for start in range(0, count, chunk):
        source = "".join(TEMPLATE.format(name=f"{prefix}_{i}", index=i) for i in range(start, min(count, start + chunk)))
        exec(compile(source, f"<{prefix}_{start}>", "exec"), namespace)
        functions.extend(namespace[f"{prefix}_{i}"] for i in range(start, min(count, start + chunk)))
        if clock() > deadline:
            break
    passes = 0
    slice_s = slice_ms / 1000.0
    while clock() < deadline:
        for function in functions:
            now = clock()
            if now >= deadline:
                break
            function(now + slice_s)
        passes += 1
    print(len(functions), passes, flush=True)
    time.sleep(1)


def main():
    mode = sys.argv[1]
    seconds = float(sys.argv[2])
    if mode == "deep":
        descend(int(sys.argv[3]) - 1, clock() + seconds)
    elif mode == "chain":
        chain(seconds)
    elif mode == "many":
        many(seconds, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(f"unknown mode {mode}")


main()
