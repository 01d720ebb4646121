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
//	POST /v1/hosts/{name}/drain     maintenance: live-migrate its VMs away
//	POST /v1/hosts/{name}/restore   back to service (HostRestoreRequest: failback)
//	PUT  /v1/cluster/ha             arm or disarm fencing and recovery (HARequest)
//	GET  /v1/vms                    every VM with its host, desired and actual state
//	POST /v1/vms                    create and place a VM (VMCreateRequest)
//	GET  /v1/vms/{name}             one VM
//	POST /v1/vms/{name}/start|stop|restart
//	POST /v1/vms/{name}/migrate     live-migrate (VMMigrateRequest)
//	PUT  /v1/vms/{name}/resize      change vCPUs and memory (VMResizeRequest)
//	DELETE /v1/vms/{name}[?force=true]
//	GET  /v1/vms/{name}/console[?bytes=N]   tail of the serial console (ConsoleLog)
//	GET  /v1/vms/{name}/stats       counters from the VM's host (VMStats)
//	GET  /v1/networks               networks, with how this host set each up
//	POST /v1/networks               create a network (NetworkCreateRequest)
//	DELETE /v1/networks/{name}      refused while a VM uses it
//	GET  /v1/images                 base images
//	PUT  /v1/images/{name}          upload an image (qcow2 or raw) as the body
//	DELETE /v1/images/{name}
//	GET  /v1/events[?after=SEQ&limit=N&wait=DURATION]   event log; wait long-polls
//
// Errors come back with a 4xx or 5xx status and an Error body.
package api
