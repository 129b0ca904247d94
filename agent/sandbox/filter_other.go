//go:build !amd64 && !arm64

package sandbox

// The filter's program is written for little-endian architectures whose audit value is known
// here; elsewhere the user and namespace tiers are unavailable rather than unfiltered.
const (
	filterSupported = false
	auditArch       = 0
	archName        = ""
	x32Bit          = 0
)

func archRules() []rule { return nil }
