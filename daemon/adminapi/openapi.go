package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
)

// The OpenAPI 3 description of the API is built from the route table at
// start-up: the paths and methods from the patterns, the bodies' schemas by
// reflection on the Go types of package api (their JSON tags), so the
// document and the served routes cannot drift apart.

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// openAPIRoute is the document's own route (its handler is serveOpenAPI).
var openAPIRoute = route{pattern: "GET /v1/openapi.json",
	doc: doc{summary: "this API's OpenAPI 3 description", out: map[string]any{}}}

// openAPI returns the document for routes, encoded.
func openAPI(routes []route, version string) (_ []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	schemas := map[string]any{}
	schemas["Error"] = nil // reserved before the walk, filled below
	schemas["Error"] = schemaOf(reflect.TypeOf(api.Error{}), schemas, false)
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			return nil, fmt.Errorf("route %q has no method", rt.pattern)
		}
		if rt.doc.summary == "" || rt.doc.out == nil {
			return nil, fmt.Errorf("route %q has no summary or answer type", rt.pattern)
		}
		op := map[string]any{
			"summary":       rt.doc.summary,
			"operationId":   operationID(method, path),
			"x-corral-role": routeRole(rt.pattern).String(),
			"responses": map[string]any{
				"200": map[string]any{"description": "done", "content": answerContent(rt.doc, schemas)},
				"default": map[string]any{"description": "refused or failed: the code says why",
					"content": jsonContent(map[string]any{"$ref": "#/components/schemas/Error"})},
			},
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.doc.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.help, "schema": map[string]any{"type": q.typ}})
		}
		if params != nil {
			op["parameters"] = params
		}
		switch rt.doc.in.(type) {
		case nil:
		case rawBody:
			op["requestBody"] = map[string]any{"required": true,
				"content": map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}}
		default:
			op["requestBody"] = map[string]any{"content": jsonContent(schemaOf(reflect.TypeOf(rt.doc.in), schemas, true))}
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(method)] = op
	}
	return json.Marshal(map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "corral admin API", "version": version,
			"description": "The API corralctl speaks: the same routes on the admin socket of every host."},
		"paths":      paths,
		"components": map[string]any{"schemas": schemas},
	})
}

// answerContent describes a route's answer: JSON, and for a streaming route
// also Server-Sent Events, each event's data one element of the JSON array.
func answerContent(d doc, schemas map[string]any) map[string]any {
	t := reflect.TypeOf(d.out)
	c := jsonContent(schemaOf(t, schemas, true))
	if d.stream && t.Kind() == reflect.Slice {
		c["text/event-stream"] = map[string]any{"schema": map[string]any{"type": "string",
			"description": "Server-Sent Events: id is the sequence number, event the kind, data one JSON " + t.Elem().Name() +
				"; a reconnecting client sends Last-Event-ID"}}
	}
	return c
}

func jsonContent(schema any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

// operationID names an operation from its method and path:
// "POST /v1/vms/{name}/start" -> "postVmsNameStart".
func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, part := range strings.FieldsFunc(strings.TrimPrefix(path, "/v1"), func(r rune) bool {
		return r == '/' || r == '{' || r == '}' || r == '-' || r == '_'
	}) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

var timeType = reflect.TypeOf(time.Time{})

// schemaOf returns the schema of t; named structs go to schemas, once, and
// are referenced (ref false inlines the top one).
func schemaOf(t reflect.Type, schemas map[string]any, ref bool) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Pointer:
		s := schemaOf(t.Elem(), schemas, true)
		return map[string]any{"allOf": []any{s}, "nullable": true}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		// Go encodes an empty (nil) slice or map as null.
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), schemas, true), "nullable": true}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), schemas, true), "nullable": true}
	case reflect.Interface:
		return map[string]any{} // any JSON value
	case reflect.Struct:
		if t.Name() == "" || !ref {
			return structSchema(t, schemas)
		}
		if _, done := schemas[t.Name()]; !done {
			schemas[t.Name()] = nil // a recursive type refers to itself
			schemas[t.Name()] = structSchema(t, schemas)
		}
		return map[string]any{"$ref": "#/components/schemas/" + t.Name()}
	}
	panic(fmt.Sprintf("openapi: no schema for %v", t)) // a new api type: teach schemaOf
}

func structSchema(t reflect.Type, schemas map[string]any) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type) // embedded: its fields are this one's
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = schemaOf(f.Type, schemas, true)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				required = append(required, name)
			}
		}
	}
	walk(t)
	s := map[string]any{"type": "object", "properties": props}
	if required != nil {
		s["required"] = required
	}
	return s
}

// serveOpenAPI answers GET /v1/openapi.json with doc.
func serveOpenAPI(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}
