// Package model owns torpor's data model: apps, machines, machine configs, events
// and snapshot records, in the JSON shapes of the Fly Machines API. It is the
// vocabulary shared by the store, the machine lifecycle, the API and the CLI, and
// it holds the typed errors that the API maps to HTTP status codes.
package model
