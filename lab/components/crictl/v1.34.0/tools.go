//go:build tools

// Package components pins the upstream commands this module builds.
package components

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
