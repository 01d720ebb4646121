// Package api defines the wire types of corral's admin API: the JSON bodies
// of /v1/... on the daemon's Unix socket, and its error codes. It imports
// only the standard library, so any tool can speak to corrald with it.
//
// Routes (all JSON):
//
//	GET  /v1/status                 this host, the leader, Raft indexes, voters
//	GET  /v1/hosts                  every host: addresses, gossip state, Raft role
//	GET  /v1/hosts/{name}           one host
//	PUT  /v1/hosts/{name}/labels    set and remove host labels (HostLabelsRequest)
//
// Errors come back with a 4xx or 5xx status and an Error body.
package api
