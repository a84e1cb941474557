// A small Go program with the control flow the rewrites touch: loops, switches, early returns,
// calls, closures, defer/recover, goroutines and channels (which resume functions through the
// dispatch table after a switch), maps and strings. It prints a transcript; the test runs it
// before and after threading and requires the same transcript.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

func collatz(n int) int {
	steps := 0
	for n != 1 {
		if n%2 == 0 {
			n /= 2
		} else {
			n = 3*n + 1
		}
		steps++
	}
	return steps
}

func classify(s string) string {
	switch {
	case s == "":
		return "empty"
	case strings.HasPrefix(s, "@"):
		if i := strings.IndexByte(s, ':'); i > 1 {
			return "user " + s[1:i] + " on " + s[i+1:]
		}
		return "bad user"
	case s[0] >= '0' && s[0] <= '9':
		n, err := strconv.Atoi(s)
		if err != nil {
			return "bad number"
		}
		return "number " + strconv.Itoa(n*2)
	}
	return "word " + strings.ToUpper(s)
}

func mayPanic(i int) (r string) {
	defer func() {
		if e := recover(); e != nil {
			r = fmt.Sprint("recovered: ", e)
		}
	}()
	a := []int{1, 2, 3}
	return strconv.Itoa(a[i])
}

func worker(id int, jobs <-chan int, out chan<- string) {
	for j := range jobs {
		out <- fmt.Sprintf("w%d:%d:%d", id, j, collatz(j))
	}
}

func walk(depth int, acc []int) []int {
	if depth == 0 {
		return acc
	}
	for i := range depth {
		if i%3 == 2 {
			continue
		}
		acc = append(acc, depth*10+i)
	}
	return walk(depth-1, acc)
}

func main() {
	for _, n := range []int{1, 7, 27, 97, 871} {
		fmt.Println("collatz", n, collatz(n))
	}
	for _, s := range []string{"", "@alice:example.org", "@:x", "42", "4x", "hello"} {
		fmt.Println(classify(s))
	}
	for i := range 5 {
		fmt.Println(mayPanic(i))
	}
	jobs, out := make(chan int), make(chan string)
	for w := range 3 {
		go worker(w, jobs, out)
	}
	go func() {
		for j := 1; j <= 30; j++ {
			jobs <- j
		}
		close(jobs)
	}()
	var got []string
	for range 30 {
		s := <-out
		got = append(got, s[strings.IndexByte(s, ':')+1:]) // which worker ran it varies
	}
	sort.Strings(got)
	fmt.Println(strings.Join(got, " "))
	fmt.Println(walk(12, nil))
	m := map[string]int{}
	for i := range 2000 {
		m[strconv.Itoa(i%97)] += i
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Println(len(keys), keys[:5], m["0"], m["96"])
	if err := errors.Join(errors.New("a"), fmt.Errorf("b: %w", os.ErrNotExist)); errors.Is(err, os.ErrNotExist) {
		fmt.Println("joined:", strings.ReplaceAll(err.Error(), "\n", "|"))
	}
}
