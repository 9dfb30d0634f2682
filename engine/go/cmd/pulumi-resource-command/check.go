package main

// Check: what pulumi-command 1.2.1 (through pulumi-go-provider's infer) does with a resource's inputs.
//
//   - Validation decodes the inputs into the resource's input struct with the SDK's mapper, whose
//     failures become check failures: a missing required field, a value of the wrong type, a field
//     the resource does not have. We validate the property values directly (an unknown value during
//     preview is valid, a secret is checked by its value) and word each failure as the mapper does,
//     naming upstream's Go types, so the CLI shows what it would show with the real plugin.
//   - Only when the inputs are valid are defaults filled in (connection.user/port/dialErrorLimit/
//     perDialTimeout and the proxy's), never inside an unknown or over a value that is set.
//   - Secret marking runs either way (so a failed check does not leak a secret into a preview).
//   - Null values are dropped, as decoding into the struct and encoding it back drops them.

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// objectSpec describes an input struct: upstream's Go type name and its fields in upstream's order.
type objectSpec struct {
	upstreamType string // e.g. "remote.Connection"
	fields       []fieldSpec
}

type fieldSpec struct {
	key          resource.PropertyKey
	optional     bool
	secret       bool
	unsupported  bool
	enum         string // the enum's type name without its package ("Logging"), if any
	defaultValue *resource.PropertyValue
	typ          reflect.Type // with pointers removed
	object       *objectSpec  // when typ is a struct
}

// upstreamTyped is implemented by every input struct (inputs.go).
type upstreamTyped interface{ upstreamType() string }

// specOf derives an objectSpec from an input struct's tags: direct fields first, then those of
// embedded structs, breadth first (the mapper's order).
func specOf(t reflect.Type) *objectSpec {
	named, ok := reflect.New(t).Elem().Interface().(upstreamTyped)
	if !ok {
		panic(fmt.Sprintf("%v has no upstreamType", t))
	}
	spec := &objectSpec{upstreamType: named.upstreamType()}
	for queue := []reflect.Type{t}; len(queue) > 0; queue = queue[1:] {
		for i := 0; i < queue[0].NumField(); i++ {
			field := queue[0].Field(i)
			if field.Anonymous {
				queue = append(queue, field.Type)
				continue
			}
			spec.fields = append(spec.fields, fieldSpecOf(field))
		}
	}
	return spec
}

func fieldSpecOf(field reflect.StructField) fieldSpec {
	parts := strings.Split(field.Tag.Get("pulumi"), ",")
	typ := field.Type
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	spec := fieldSpec{
		key:         resource.PropertyKey(parts[0]),
		optional:    len(parts) > 1 && parts[1] == "optional",
		secret:      field.Tag.Get("secret") == "true",
		unsupported: field.Tag.Get("unsupported") == "true",
		enum:        field.Tag.Get("enum"),
		typ:         typ,
	}
	if typ.Kind() == reflect.Struct {
		spec.object = specOf(typ)
	}
	if text, ok := field.Tag.Lookup("default"); ok {
		var value resource.PropertyValue
		switch typ.Kind() {
		case reflect.String:
			value = resource.NewProperty(text)
		case reflect.Int, reflect.Float64:
			number, err := strconv.ParseFloat(text, 64)
			if err != nil {
				panic(fmt.Sprintf("default of %s: %v", spec.key, err))
			}
			value = resource.NewProperty(number)
		default:
			panic(fmt.Sprintf("no default of kind %v (%s)", typ.Kind(), spec.key))
		}
		spec.defaultValue = &value
	}
	return spec
}

// checkInputs is Check for one resource type: the inputs to record, and any failures.
func checkInputs(spec *objectSpec, news resource.PropertyMap) (resource.PropertyMap, []plugin.CheckFailure) {
	var failures []plugin.CheckFailure
	for _, f := range validateObject(spec, news) {
		failures = append(failures, plugin.CheckFailure{Property: resource.PropertyKey(f.field), Reason: f.reason})
	}
	inputs := dropNulls(spec, news)
	if len(failures) == 0 {
		inputs = withDefaults(spec, inputs)
	}
	return withSecrets(spec, inputs), failures
}

// fieldFailure is one mapper failure: the field (as the mapper names it) and its message.
type fieldFailure struct{ field, reason string }

func (spec *objectSpec) shortName() string {
	return spec.upstreamType[strings.LastIndex(spec.upstreamType, ".")+1:]
}

func (spec *objectSpec) module() string {
	return spec.upstreamType[:strings.LastIndex(spec.upstreamType, ".")]
}

func validateObject(spec *objectSpec, props resource.PropertyMap) []fieldFailure {
	var failures []fieldFailure
	known := map[resource.PropertyKey]bool{}
	for _, field := range spec.fields {
		known[field.key] = true
		value := unwrapSecret(props[field.key])
		if value.IsNull() {
			if !field.optional {
				failures = append(failures, fieldFailure{string(field.key),
					fmt.Sprintf("Missing required field '%s' on '%s'", field.key, spec.upstreamType)})
			}
			continue
		}
		if field.unsupported {
			failures = append(failures, fieldFailure{string(field.key), fmt.Sprintf(
				"'%s' is not supported by this stand-in for pulumi-command %s (bazbii-infra's "+
					"pulumi-resource-command): it does not collect assets", field.key, version)})
			continue
		}
		if f := validateValue(spec, field, string(field.key), field.typ, value); f != nil {
			failures = append(failures, *f)
		}
	}
	var unknownKeys []string
	for key := range props {
		if !known[key] {
			unknownKeys = append(unknownKeys, string(key))
		}
	}
	sort.Strings(unknownKeys)
	for _, key := range unknownKeys {
		failures = append(failures, fieldFailure{key,
			fmt.Sprintf("Unrecognized field '%s' on '%s'", key, spec.upstreamType)})
	}
	return failures
}

// validateValue checks one (non-null) value against the Go type it would decode into. name is the
// mapper's name for it: the key, "key[i]" for an element, "key[k] value" for a map value.
func validateValue(owner *objectSpec, field fieldSpec, name string, typ reflect.Type,
	value resource.PropertyValue,
) *fieldFailure {
	value = unwrapSecret(value)
	if value.IsComputed() {
		return nil // unknown in preview: it may be anything yet
	}
	wrongType := func() *fieldFailure {
		return &fieldFailure{name, fmt.Sprintf("Field '%s' on '%s' must be a '%s'; got '%s' instead",
			name, owner.upstreamType, expectedTypeName(owner, field, typ), goTypeName(value))}
	}
	if value.IsObject() && typ.Kind() != reflect.Map && typ.Kind() != reflect.Struct {
		return &fieldFailure{name, fmt.Sprintf("An error occurred decoding '%s.%s': Cannot decode Object{} "+
			"to type %s; it isn't a struct, and no custom decoder exists", owner.shortName(), name,
			expectedTypeName(owner, field, typ))}
	}
	switch typ.Kind() {
	case reflect.String:
		if !value.IsString() {
			return wrongType()
		}
	case reflect.Bool:
		if !value.IsBool() {
			return wrongType()
		}
	case reflect.Int, reflect.Float64:
		if !value.IsNumber() {
			return wrongType()
		}
	case reflect.Slice:
		if !value.IsArray() {
			return wrongType()
		}
		if typ.Elem().Kind() == reflect.Interface {
			return nil
		}
		for i, element := range value.ArrayValue() {
			if element.IsNull() {
				continue
			}
			if f := validateValue(owner, field, fmt.Sprintf("%s[%d]", name, i), typ.Elem(), element); f != nil {
				return f
			}
		}
	case reflect.Map:
		if !value.IsObject() {
			return wrongType()
		}
		entries := value.ObjectValue()
		for _, key := range entries.StableKeys() {
			if entries[key].IsNull() {
				continue
			}
			entryName := fmt.Sprintf("%s[%s] value", name, key)
			if f := validateValue(owner, field, entryName, typ.Elem(), entries[key]); f != nil {
				return f
			}
		}
	case reflect.Struct:
		if !value.IsObject() {
			return wrongType()
		}
		nested := validateObject(field.object, value.ObjectValue())
		if len(nested) == 0 {
			return nil
		}
		var text strings.Builder
		fmt.Fprintf(&text, "%d failures decoding:", len(nested))
		for _, f := range nested {
			fmt.Fprintf(&text, "\n\t%s: %s", f.field, f.reason)
		}
		return &fieldFailure{name, fmt.Sprintf("An error occurred decoding '%s.%s': %s",
			owner.shortName(), name, text.String())}
	}
	return nil
}

// expectedTypeName names a Go type as the mapper's messages do.
func expectedTypeName(owner *objectSpec, field fieldSpec, typ reflect.Type) string {
	switch {
	case field.enum != "" && typ.Kind() == reflect.String:
		return owner.module() + "." + field.enum
	case typ.Kind() == reflect.Struct:
		return field.object.upstreamType
	default:
		return typ.String()
	}
}

// goTypeName names a property value's type as the mapper sees it (its Mappable form).
func goTypeName(value resource.PropertyValue) string {
	switch {
	case value.IsString():
		return "string"
	case value.IsNumber():
		return "float64"
	case value.IsBool():
		return "bool"
	case value.IsArray():
		return "[]interface {}"
	case value.IsObject():
		return "map[string]interface {}"
	default:
		return value.TypeString()
	}
}

// unwrapSecret removes secret markers (the value is checked, and decoded, by what it holds).
func unwrapSecret(value resource.PropertyValue) resource.PropertyValue {
	for value.IsSecret() {
		value = value.SecretValue().Element
	}
	return value
}

// mapObject rebuilds the object inside value (under any secret marker) with edit; anything else
// (an unknown, a value of another type) is left as it is.
func mapObject(value resource.PropertyValue,
	edit func(resource.PropertyMap) resource.PropertyMap,
) resource.PropertyValue {
	if value.IsSecret() {
		return resource.MakeSecret(mapObject(value.SecretValue().Element, edit))
	}
	if !value.IsObject() {
		return value
	}
	return resource.NewProperty(edit(value.ObjectValue()))
}

func dropNulls(spec *objectSpec, props resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for key, value := range props {
		if unwrapSecret(value).IsNull() {
			continue
		}
		out[key] = value
	}
	for _, field := range spec.fields {
		if value, ok := out[field.key]; ok && field.object != nil {
			nested := field.object
			out[field.key] = mapObject(value, func(m resource.PropertyMap) resource.PropertyMap {
				return dropNulls(nested, m)
			})
		}
	}
	return out
}

func withDefaults(spec *objectSpec, props resource.PropertyMap) resource.PropertyMap {
	out := props.Copy()
	for _, field := range spec.fields {
		value, ok := out[field.key]
		switch {
		case !ok && field.defaultValue != nil:
			out[field.key] = *field.defaultValue
		case ok && field.object != nil:
			nested := field.object
			out[field.key] = mapObject(value, func(m resource.PropertyMap) resource.PropertyMap {
				return withDefaults(nested, m)
			})
		}
	}
	return out
}

// withSecrets marks the secret fields secret, nested ones first (a connection is secret as a whole
// and so are its password and keys inside it, as upstream's Check returns them).
func withSecrets(spec *objectSpec, props resource.PropertyMap) resource.PropertyMap {
	out := props.Copy()
	for _, field := range spec.fields {
		value, ok := out[field.key]
		if !ok {
			continue
		}
		if field.object != nil {
			nested := field.object
			value = mapObject(value, func(m resource.PropertyMap) resource.PropertyMap {
				return withSecrets(nested, m)
			})
		}
		if field.secret && !value.IsSecret() {
			value = resource.MakeSecret(value)
		}
		out[field.key] = value
	}
	return out
}
