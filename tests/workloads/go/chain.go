// chain: a Go workload for oxeye's end-to-end profiling tests.
//
// Usage: chain SECONDS
//
// It burns CPU for SECONDS of wall-clock time in one fixed call chain,
//
//	main.main → main.chainOuter → main.chainMiddle → main.chainInlined → main.leafHot
//
// where chainMiddle and leafHot are never inlined and chainInlined is always
// inlined into chainMiddle (check with `go build -gcflags=-m`: "inlining call
// to chainInlined"). Most samples land in leafHot; the ones in chainMiddle's
// body fall inside chainInlined's inline-tree range, so a symbolizer must
// expand the inline tree to name chainInlined. It prints only its pid.
package main

import (
	"os"
	"strconv"
	"time"
)

// sink keeps the compiler from discarding the leaf's work.
var sink uint64

func main() {
	seconds := 5.0
	if len(os.Args) > 1 {
		if s, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
			seconds = s
		}
	}
	os.Stdout.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(deadline) {
		chainOuter(200)
	}
}

// chainOuter is small enough to be inlined into main.
func chainOuter(rounds int) {
	for i := 0; i < rounds; i++ {
		sink += chainMiddle(uint64(i))
	}
}

//go:noinline
func chainMiddle(seed uint64) uint64 {
	total := uint64(0)
	for i := uint64(0); i < 16; i++ {
		total += chainInlined(seed + i)
	}
	return total
}

// chainInlined does a little mixing of its own (so some samples land in its
// inlined body inside chainMiddle) and calls the leaf.
func chainInlined(x uint64) uint64 {
	x ^= x >> 7
	x *= 0x9e3779b97f4a7c15
	return leafHot(x) + x>>3
}

//go:noinline
func leafHot(x uint64) uint64 {
	for i := 0; i < 2000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}
