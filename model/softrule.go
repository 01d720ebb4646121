package model

import "fmt"

// SoftRule is a placement preference that a host may or may not meet: a
// VM's Prefer rules add their weight to a host that meets them, its Avoid
// rules take theirs away, and among the hosts that fit (the hard rules:
// capacity, required labels, anti-affinity) placement takes the highest
// sum. Kind "host" is met by a host that carries the label Key=Value;
// kind "vm" by a host that runs another VM carrying it (affinity to, or
// away from, other VMs). Weights are 1..100.
type SoftRule struct {
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Value  string `json:"value"`
	Weight int    `json:"weight"`
}

// Soft rule kinds.
const (
	SoftHost = "host"
	SoftVM   = "vm"
)

// MaxSoftRules bounds a VM's Prefer and Avoid rules, each.
const MaxSoftRules = 8

// MaxSoftWeight is a soft rule's largest weight.
const MaxSoftWeight = 100

// String writes the rule as corralctl takes it: KIND:KEY=VALUE:WEIGHT.
func (r SoftRule) String() string {
	return fmt.Sprintf("%s:%s=%s:%d", r.Kind, r.Key, r.Value, r.Weight)
}

func validateSoftRules(what string, rules []SoftRule) error {
	if len(rules) > MaxSoftRules {
		return fmt.Errorf("%d %s rules, at most %d: %w", len(rules), what, MaxSoftRules, ErrInvalid)
	}
	for i, r := range rules {
		if r.Kind != SoftHost && r.Kind != SoftVM {
			return fmt.Errorf("%s rule %d: kind %q, want host or vm: %w", what, i, r.Kind, ErrInvalid)
		}
		if err := ValidateLabels(map[string]string{r.Key: r.Value}); err != nil {
			return fmt.Errorf("%s rule %d: %w", what, i, err)
		}
		if r.Weight < 1 || r.Weight > MaxSoftWeight {
			return fmt.Errorf("%s rule %d: weight %d out of range 1..%d: %w", what, i, r.Weight, MaxSoftWeight, ErrInvalid)
		}
	}
	return nil
}
