package main

import (
	"bufio"
	"os"
	"strings"
	"sync"
)

// pieceLen is the length of the pieces of the private key and of the
// signatures looked for in the logs.
const pieceLen = 40

// secrets collects what must never reach a log line: every 40-character
// piece of the merchant's private key, pieces of every Authorization
// signature the simulator received, and each payee, bank and operator
// value the commands sent, whole.
type secrets struct {
	mu     sync.Mutex
	pieces map[string]bool         // pieceLen bytes
	values map[int]map[string]bool // whole values, by length
}

func newSecrets() *secrets {
	return &secrets{pieces: map[string]bool{}, values: map[int]map[string]bool{}}
}

// add records values that must not be logged, whole.
func (s *secrets) add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		if s.values[len(v)] == nil {
			s.values[len(v)] = map[string]bool{}
		}
		s.values[len(v)][v] = true
	}
}

// addPieces records every pieceLen-byte piece of v that starts at a
// multiple of stride.
func (s *secrets) addPieces(v string, stride int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i+pieceLen <= len(v); i += stride {
		s.pieces[v[i:i+pieceLen]] = true
	}
}

// addKey records every piece of a PEM key's base64 body, its lines joined.
func (s *secrets) addKey(pem []byte) {
	var body strings.Builder
	for line := range strings.SplitSeq(string(pem), "\n") {
		if !strings.HasPrefix(line, "-----") {
			body.WriteString(strings.TrimSpace(line))
		}
	}
	s.addPieces(body.String(), 1)
	// A log could also hold the PEM as it is, line breaks included.
	for line := range strings.SplitSeq(string(pem), "\n") {
		s.addPieces(strings.TrimSpace(line), 1)
	}
}

// scan returns the lines of the files at paths that hold a secret, with the
// file each comes from.
func (s *secrets) scan(paths []string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return found, err
		}
		r := bufio.NewScanner(f)
		r.Buffer(make([]byte, 1<<20), 16<<20)
		for r.Scan() {
			if line := r.Text(); s.holds(line) {
				found = append(found, p+": "+line)
			}
		}
		err = r.Err()
		f.Close()
		if err != nil {
			return found, err
		}
	}
	return found, nil
}

// holds reports whether line holds a secret (mu held).
func (s *secrets) holds(line string) bool {
	for i := range len(line) {
		if i+pieceLen <= len(line) && s.pieces[line[i:i+pieceLen]] {
			return true
		}
		for n, vs := range s.values {
			if i+n <= len(line) && vs[line[i:i+n]] {
				return true
			}
		}
	}
	return false
}
