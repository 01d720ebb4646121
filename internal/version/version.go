// Package version holds corral's version, set at build time with
// -ldflags "-X github.com/corralhq/corral/internal/version.Version=v1.2.3".
package version

// Version is the release version, "dev" for a plain go build.
var Version = "dev"
