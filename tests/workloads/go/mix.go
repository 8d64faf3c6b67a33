// mix: a Go workload that exercises much of the standard library (JSON, regexps,
// sorting, compression, hashing, formatting, maps, generics), so its binary has thousands
// of functions and deep inlining. The symbolizer's tests check every function of it
// against the DWARF of an unstripped build; it is also a busier profiling target than
// chain.go.
//
// Usage: mix SECONDS. It prints only its pid.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

type record struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
}

var wordRE = regexp.MustCompile(`[a-z]+[0-9]*`)

// Max is generic so the binary has shape-instantiated functions.
func Max[T int | float64 | string](values []T) T {
	var best T
	for i, v := range values {
		if i == 0 || v > best {
			best = v
		}
	}
	return best
}

func makeRecords(n int) []record {
	out := make([]record, n)
	for i := range out {
		out[i] = record{
			Name:  fmt.Sprintf("item%d", i*7919%1000),
			Count: i * 31 % 97,
			Tags:  []string{"a" + strconv.Itoa(i%5), "b" + strconv.Itoa(i%3)},
			Attrs: map[string]string{"k": strings.Repeat("v", i%4+1)},
		}
	}
	return out
}

func roundTrip(records []record) int {
	encoded, err := json.Marshal(records)
	if err != nil {
		panic(err)
	}
	var decoded []record
	if err := json.Unmarshal(encoded, &decoded); err != nil {
		panic(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(encoded)
	zw.Close()
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		panic(err)
	}
	plain, _ := io.ReadAll(zr)
	sum := sha256.Sum256(plain)
	words := wordRE.FindAllString(string(plain), -1)
	sort.Strings(words)
	counts := make([]int, len(decoded))
	for i, r := range decoded {
		counts[i] = r.Count
	}
	return int(sum[0]) + len(words) + Max(counts) + len(Max(words)) + int(Max([]float64{1.5, 2.5}))
}

func main() {
	seconds := 5.0
	if len(os.Args) > 1 {
		if s, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
			seconds = s
		}
	}
	os.Stdout.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	records := makeRecords(200)
	total := 0
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(deadline) {
		total += roundTrip(records)
	}
	if total == 42 {
		os.Stderr.WriteString("unlikely\n")
	}
}
