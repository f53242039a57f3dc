// The OCI distribution-spec conformance suite, built by airlock_lab.conformance with
// `go test -c` in a copy of this file under the user's cache directory (go.sum is made there).
// The four-workflow suite builds with Go 1.26; a require line only, no copied source.
module airlock.local/conformance

go 1.26

require github.com/opencontainers/distribution-spec/conformance v0.0.0-20231101194043-f2182352d4cc
