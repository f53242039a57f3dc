//go:build tools

// Package components pins the upstream commands this module builds.
package components

import (
	_ "github.com/containernetworking/plugins/plugins/meta/flannel"
)
