// Package archtest holds no code: its tests enforce corral's architecture
// rules (who may import which third-party library, what corralctl links,
// that pure packages stay pure, that every package is documented).
package archtest
