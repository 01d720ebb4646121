// Package model holds corral's domain types — hosts, VMs, networks — and
// their validation. It is pure: no clock, no I/O, no goroutines. Time comes in
// as a parameter wherever a rule depends on it.
package model
