// Package api defines the wire types of corral's admin API: the JSON bodies
// of /v1/... on the daemon's Unix socket, and its error codes. It imports
// only the standard library, so any tool can speak to corrald with it.
//
// The routes, with their bodies and parameters, are described in OpenAPI 3
// at GET /v1/openapi.json, a document corrald builds from its route table
// (daemon/adminapi), so it is always the served set.
//
// Errors come back with a 4xx or 5xx status and an Error body.
package api
