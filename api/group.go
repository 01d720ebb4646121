package api

import "time"

// Group keeps Count alike VMs, NAME-1 ... NAME-N, from one template.
type Group struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	Count   int    `json:"count"`
	// Template is every member's spec; in its user data and kernel
	// command line {{index}} and {{name}} become the member's index and
	// name.
	Template  VMSpec    `json:"template"`
	Stopped   bool      `json:"stopped,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Version counts templates; members of older ones are being replaced
	// (a roll-out), Batch at a time.
	Version uint64 `json:"version"`
	Batch   int    `json:"batch"`
	// Paused says why the roll-out stopped.
	Paused string `json:"paused,omitempty"`
	// CanRollback: the template before the last change is kept.
	CanRollback bool `json:"can_rollback,omitempty"`
	// Autoscale, when set, moves Count with the members' CPU use.
	Autoscale *Autoscale `json:"autoscale,omitempty"`
	// Members are the group's VMs (being deleted ones excluded), by index.
	Members []GroupMember `json:"members"`
	// Running counts the members that run; Ready those that run and pass
	// the template's health check (Running when it has none); Current
	// those of the current template.
	Running int `json:"running"`
	Ready   int `json:"ready"`
	Current int `json:"current"`
}

// GroupMember is one member VM as state holds it.
type GroupMember struct {
	Name    string `json:"name"`
	Host    string `json:"host"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Version is the template version it was made from.
	Version uint64 `json:"version"`
	Health  string `json:"health,omitempty"`
}

// GroupCreateRequest is the body of POST /v1/groups: the fields of a VM
// create (without a host: members spread over the hosts) and a count.
type GroupCreateRequest struct {
	Name    string    `json:"name"`
	Count   int       `json:"count"`
	Spec    VMSpec    `json:"spec"`
	HA      *HAPolicy `json:"ha,omitempty"`
	Stopped bool      `json:"stopped,omitempty"`
	// Project holds the group and its members (empty: the caller's
	// token's, else default).
	Project   string     `json:"project,omitempty"`
	Autoscale *Autoscale `json:"autoscale,omitempty"`
}

// Autoscale lets the leader move a group's count within Min..Max toward
// the count that puts the running members' mean CPU use at TargetCPU
// percent of their vCPUs, sampled every 15 s, waiting UpCooldownSec (60)
// after any change before growing and DownCooldownSec (300) before
// shrinking (to the highest count recommended within it). It is the body
// of PUT /v1/groups/{name}/autoscale.
type Autoscale struct {
	Min             int `json:"min"`
	Max             int `json:"max"`
	TargetCPU       int `json:"target_cpu"`
	UpCooldownSec   int `json:"up_cooldown_s,omitempty"`
	DownCooldownSec int `json:"down_cooldown_s,omitempty"`
}

// GroupScaleRequest is the body of PUT /v1/groups/{name}/count.
type GroupScaleRequest struct {
	Count int `json:"count"`
}

// GroupUpdateRequest is the body of PUT /v1/groups/{name}/template: a new
// template, rolled out Batch members at a time (0: 1), each batch's new
// members started before as many old ones are deleted.
type GroupUpdateRequest struct {
	Spec  VMSpec    `json:"spec"`
	HA    *HAPolicy `json:"ha,omitempty"`
	Batch int       `json:"batch,omitempty"`
}
