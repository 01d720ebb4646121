package model

import (
	"fmt"
	"sort"
	"strings"
)

const (
	maxNameLen       = 63
	maxHostNameLen   = 253
	maxLabelKeyLen   = 63
	maxLabelValueLen = 63
	maxLabels        = 64
)

// ValidateName checks the name of a VM or a network: 1 to 63 characters,
// lowercase letters, digits, '-', '_' and '.', starting with a letter or digit.
// The name becomes part of libvirt domain and volume names, so it must be safe
// as a file name.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty: %w", kind, ErrInvalid)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%s name %.20q... is %d characters, at most %d allowed: %w", kind, name, len(name), maxNameLen, ErrInvalid)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return fmt.Errorf("%s name %q: character %q at position %d is not allowed (use a-z, 0-9, and - _ . after the first character): %w",
				kind, name, r, i, ErrInvalid)
		}
	}
	return nil
}

// ValidateHostName checks a host name: 1 to 253 characters of letters, digits,
// '-', '_' and '.', as a DNS name or a short hostname would be, starting
// with a letter, digit or '_' (never '-': a name is passed to fence_command
// and must not read as an option).
func ValidateHostName(name string) error {
	if name == "" {
		return fmt.Errorf("host name is empty: %w", ErrInvalid)
	}
	if len(name) > maxHostNameLen {
		return fmt.Errorf("host name is %d characters, at most %d allowed: %w", len(name), maxHostNameLen, ErrInvalid)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || i > 0 && (r == '-' || r == '.')
		if !ok {
			return fmt.Errorf("host name %q: character %q at position %d is not allowed (letters, digits, _, and - . after the first character): %w", name, r, i, ErrInvalid)
		}
	}
	return nil
}

// ValidateLabels checks label keys and values. Keys are 1 to 63 characters of
// a-z, 0-9, '-', '_', '.', '/'; values are at most 63 printable characters
// without '=' or ','.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d labels, at most %d allowed: %w", len(labels), maxLabels, ErrInvalid)
	}
	for _, k := range SortedKeys(labels) {
		v := labels[k]
		if k == "" || len(k) > maxLabelKeyLen {
			return fmt.Errorf("label key %q must be 1 to %d characters: %w", k, maxLabelKeyLen, ErrInvalid)
		}
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./", r)) {
				return fmt.Errorf("label key %q: character %q is not allowed (use a-z 0-9 - _ . /): %w", k, r, ErrInvalid)
			}
		}
		if len(v) > maxLabelValueLen {
			return fmt.Errorf("label %q: value is %d characters, at most %d allowed: %w", k, len(v), maxLabelValueLen, ErrInvalid)
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f || r == '=' || r == ',' {
				return fmt.Errorf("label %q: value has character %q, which is not allowed: %w", k, r, ErrInvalid)
			}
		}
	}
	return nil
}

// SortedKeys returns the keys of m in ascending order, for deterministic
// iteration.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CloneLabels returns a copy of labels; nil stays nil.
func CloneLabels(labels map[string]string) map[string]string {
	if labels == nil {
		return nil
	}
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		out[k] = v
	}
	return out
}
