// The known call chain in C++, for the unwinder tests: main -> Driver::run ->
// Stage<3>::process -> Stage<2>::process -> Stage<1>::process -> Worker<T>::leaf, through
// templates, a virtual call and a std::function, none of which may be inlined away.
// Built with -O2 -fomit-frame-pointer. Runs for argv[1] seconds (default 5).
#include <chrono>
#include <cstdlib>
#include <functional>

#define NOINLINE __attribute__((noinline))

volatile unsigned long sink;

struct Leaf {
    virtual ~Leaf() = default;
    virtual void leaf(unsigned long n) = 0;
};

template <typename T>
struct Worker final : Leaf {
    NOINLINE void leaf(unsigned long n) override {
        T acc = 0;
        for (unsigned long i = 0; i < n; i++) acc += static_cast<T>(i);
        sink += static_cast<unsigned long>(acc);
    }
};

template <int Depth>
struct Stage {
    NOINLINE static void process(Leaf &leaf, const std::function<unsigned long()> &units) {
        Stage<Depth - 1>::process(leaf, units);
        sink++;  // not a tail call
    }
};

template <>
struct Stage<0> {
    NOINLINE static void process(Leaf &leaf, const std::function<unsigned long()> &units) {
        leaf.leaf(units());
        sink++;
    }
};

struct Driver {
    double seconds;
    NOINLINE void run() {
        Worker<unsigned long> worker;
        std::function<unsigned long()> units = [] { return 400000UL; };
        auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < end) Stage<3>::process(worker, units);
        sink++;
    }
};

int main(int argc, char **argv) {
    Driver driver{argc > 1 ? std::atof(argv[1]) : 5.0};
    driver.run();
    return 0;
}
