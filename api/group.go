package api

import "time"

// Group keeps Count alike VMs, NAME-1 ... NAME-N, from one template.
type Group struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	Count   int    `json:"count"`
	// Template is every member's spec; in its user data {{index}} and
	// {{name}} become the member's index and name.
	Template  VMSpec    `json:"template"`
	Stopped   bool      `json:"stopped,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Members are the group's VMs (being deleted ones excluded), by index.
	Members []GroupMember `json:"members"`
	// Running counts the members that run.
	Running int `json:"running"`
}

// GroupMember is one member VM as state holds it.
type GroupMember struct {
	Name    string `json:"name"`
	Host    string `json:"host"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
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
	Project string `json:"project,omitempty"`
}

// GroupScaleRequest is the body of PUT /v1/groups/{name}/count.
type GroupScaleRequest struct {
	Count int `json:"count"`
}
