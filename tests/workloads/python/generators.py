# Generators and coroutines, for SECONDS of wall-clock time, in alternating rounds of about
# equal work:
#   - a generator: consume iterates produce, whose body does the work between yields;
#   - an asyncio coroutine chain: asyncio.run(handler()), handler awaits compute, which does
#     the work and yields to the event loop (asyncio.sleep(0)) between chunks, so it is
#     resumed by the loop's task step each time.
# Prints nothing.
import time

# The deadline counts from here: importing asyncio takes a tenth of a second on a slow CPU.
STARTED = time.monotonic()

import asyncio  # noqa: E402
import sys  # noqa: E402

CHUNK = 2000
CHUNKS = 20


def produce(chunks):
    x = 1
    for _ in range(chunks):
        for _ in range(CHUNK):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        yield x


def consume(chunks):
    total = 0
    for value in produce(chunks):
        total ^= value
    return total


async def compute(chunks):
    x = 1
    for _ in range(chunks):
        for _ in range(CHUNK):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        await asyncio.sleep(0)
    return x


async def handler(chunks):
    return await compute(chunks)


def main(seconds):
    end = STARTED + seconds
    while time.monotonic() < end:
        consume(CHUNKS)
        asyncio.run(handler(CHUNKS))


if __name__ == "__main__":
    main(float(sys.argv[1]))
