//go:build race

package main

// raceEnabled: the test binary runs with the race detector, and the smoke
// test builds the service the same way, sharing the build cache.
const raceEnabled = true
