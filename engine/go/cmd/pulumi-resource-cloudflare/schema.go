package main

import (
	"strings"
	"unicode"
)

// The declarative schema of the resources this provider answers: each property's Pulumi name, its
// key in the Cloudflare API's JSON, its type, and what the upstream Terraform v5 schema says of it
// (required, computed, default, validators, RequiresReplace). Check, Diff and the JSON mapping are
// all driven by it, so a property is described once.

type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindNumber
	kindList
	kindMap
	kindObject
	// kindStringOrNumber is Terraform's dynamic attribute that may hold a string or a number (a DNS
	// record's data.flags).
	kindStringOrNumber
	// kindJSON is an output the API returns as a JSON object and the Pulumi schema types as a string
	// holding that JSON (a DNS record's meta, a tunnel's metadata).
	kindJSON
)

type valueType struct {
	kind kind
	elem *valueType  // list items, map values
	obj  *objectType // object attributes
}

var (
	tString        = &valueType{kind: kindString}
	tBool          = &valueType{kind: kindBool}
	tInt           = &valueType{kind: kindInt}
	tNumber        = &valueType{kind: kindNumber}
	tStringOrNum   = &valueType{kind: kindStringOrNumber}
	tJSON          = &valueType{kind: kindJSON}
	tStringList    = listOf(tString)
	tPoolsByRegion = mapOf(tStringList) // region/PoP/country code -> pool ids
)

func listOf(elem *valueType) *valueType { return &valueType{kind: kindList, elem: elem} }
func mapOf(elem *valueType) *valueType  { return &valueType{kind: kindMap, elem: elem} }

func (t *valueType) describe() string {
	switch t.kind {
	case kindString:
		return "a string"
	case kindBool:
		return "a boolean"
	case kindInt:
		return "an integer"
	case kindNumber:
		return "a number"
	case kindList:
		return "a list"
	case kindMap, kindObject:
		return "an object"
	case kindStringOrNumber:
		return "a string or a number"
	case kindJSON:
		return "a JSON string"
	}
	return "a value"
}

type objectType struct {
	attrs  []*attribute
	byName map[string]*attribute
	byAPI  map[string]*attribute
}

// attribute is one property of a resource or of a nested object.
type attribute struct {
	name string // the Pulumi property name (camelCase)
	api  string // the key in the API's JSON
	typ  *valueType

	input    bool // the program may set it
	required bool
	computed bool // the API fills it in when the program does not set it

	deflt    any      // the Terraform schema's default, applied by Check when the program leaves it out
	oneOf    []string // allowed values, compared case-insensitively as Terraform's OneOfCaseInsensitive
	min, max *float64

	replaces bool // RequiresReplace in the Terraform schema
	secret   bool // always a secret output (Sensitive in the Terraform schema)

	rewritten bool // an output the API sets anew on every change (modified_on, a configuration's version)
	inPath    bool // part of the URL (account_id, zone_id, tunnel_id), never in a request body
	keepInput bool // the API never returns it: outputs keep what the program set (a tunnel's secret)
	local     bool // used by the provider only, never sent (a DNS read option)

	conflictsWith string // a sibling that may not be set together with this one

	// sameValue says whether the API's value stands for the one the program set (the API stores
	// "direct.example.com" for "direct"), so a refresh does not turn a name into a diff.
	sameValue func(input, api string) bool
}

type option func(*attribute)

func required(a *attribute)  { a.input, a.required = true, true }
func computed(a *attribute)  { a.computed = true }
func replaces(a *attribute)  { a.replaces = true }
func secret(a *attribute)    { a.secret = true }
func inPath(a *attribute)    { a.inPath = true }
func rewritten(a *attribute) { a.rewritten = true }
func keepInput(a *attribute) { a.keepInput = true }
func local(a *attribute)     { a.local = true }

func def(value any) option          { return func(a *attribute) { a.deflt = value; a.computed = true } }
func api(name string) option        { return func(a *attribute) { a.api = name } }
func oneOf(values ...string) option { return func(a *attribute) { a.oneOf = values } }
func conflictsWith(name string) option {
	return func(a *attribute) { a.conflictsWith = name }
}
func sameValue(same func(input, api string) bool) option {
	return func(a *attribute) { a.sameValue = same }
}
func between(lo, hi float64) option {
	return func(a *attribute) { a.min, a.max = &lo, &hi }
}
func atLeast(lo float64) option { return func(a *attribute) { a.min = &lo } }

// in declares a property the program may set (optional unless `required` is given); out one only
// the API sets.
func in(name string, t *valueType, opts ...option) *attribute {
	a := &attribute{name: name, typ: t, input: true}
	for _, o := range opts {
		o(a)
	}
	return a
}

func out(name string, t *valueType, opts ...option) *attribute {
	a := &attribute{name: name, typ: t, computed: true}
	for _, o := range opts {
		o(a)
	}
	return a
}

// object is a nested object (or a resource's top level) whose API keys are the snake_case of the
// Pulumi names unless an attribute says otherwise; camelObject one whose API keys are the Pulumi
// names themselves (cloudflared's configuration is camelCase JSON).
func object(attrs ...*attribute) *valueType { return newObject(snakeCase, attrs) }
func camelObject(attrs ...*attribute) *valueType {
	return newObject(func(s string) string { return s }, attrs)
}

func newObject(apiCase func(string) string, attrs []*attribute) *valueType {
	o := &objectType{attrs: attrs, byName: map[string]*attribute{}, byAPI: map[string]*attribute{}}
	for _, a := range attrs {
		if a.api == "" {
			a.api = apiCase(a.name)
		}
		o.byName[a.name] = a
		o.byAPI[a.api] = a
	}
	return &valueType{kind: kindObject, obj: o}
}

// snakeCase: "minimumOrigins" -> "minimum_origins", "ipv4Only" -> "ipv4_only".
func snakeCase(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
