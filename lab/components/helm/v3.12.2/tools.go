//go:build tools

// Package components pins the upstream commands this module builds.
package components

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
