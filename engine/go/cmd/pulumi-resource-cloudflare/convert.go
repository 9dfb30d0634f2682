package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Between Pulumi property values (camelCase names, secrets, unknowns) and the API's JSON
// (snake_case or cloudflared camelCase keys), driven by the schema.

// plain is v with every secret unwrapped (the API gets the values; secrecy is Pulumi's business).
func plain(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return plain(v.SecretValue().Element)
	case v.IsArray():
		items := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, item := range v.ArrayValue() {
			items[i] = plain(item)
		}
		return resource.NewArrayProperty(items)
	case v.IsObject():
		return resource.NewObjectProperty(plainMap(v.ObjectValue()))
	}
	return v
}

func plainMap(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		out[k] = plain(v)
	}
	return out
}

func secretIf(wrap bool, v resource.PropertyValue) resource.PropertyValue {
	if wrap && !v.IsSecret() {
		return resource.MakeSecret(v)
	}
	return v
}

func isUnset(m resource.PropertyMap, key string) bool {
	v, ok := m[resource.PropertyKey(key)]
	return !ok || v.IsNull()
}

// stringInput is a top-level string input (an account or zone id), unwrapped.
func stringInput(m resource.PropertyMap, key string) (string, bool) {
	v, ok := m[resource.PropertyKey(key)]
	if !ok {
		return "", false
	}
	v = plain(v)
	if !v.IsString() || v.StringValue() == "" {
		return "", false
	}
	return v.StringValue(), true
}

// requestBody is what the API is sent for these inputs: every input the program set, under its API
// key, except the ones in the URL, the provider's own options and the `omit`ted ones.
func requestBody(o *objectType, inputs resource.PropertyMap, omit ...string) map[string]any {
	skip := map[string]bool{}
	for _, name := range omit {
		skip[name] = true
	}
	body := map[string]any{}
	for _, a := range o.attrs {
		if !a.input || a.inPath || a.local || skip[a.name] || isUnset(inputs, a.name) {
			continue
		}
		body[a.api] = toAPI(a.typ, inputs[resource.PropertyKey(a.name)])
	}
	return body
}

func toAPI(t *valueType, v resource.PropertyValue) any {
	v = plain(v)
	switch {
	case v.IsNull() || v.IsComputed():
		return nil
	case t.kind == kindList && v.IsArray():
		items := []any{}
		for _, item := range v.ArrayValue() {
			items = append(items, toAPI(t.elem, item))
		}
		return items
	case t.kind == kindMap && v.IsObject():
		out := map[string]any{}
		for key, item := range v.ObjectValue() {
			out[string(key)] = toAPI(t.elem, item)
		}
		return out
	case t.kind == kindObject && v.IsObject():
		out := map[string]any{}
		m := v.ObjectValue()
		for _, a := range t.obj.attrs {
			if a.input && !isUnset(m, a.name) {
				out[a.api] = toAPI(a.typ, m[resource.PropertyKey(a.name)])
			}
		}
		return out
	}
	return v.Mappable()
}

// fromAPI converts one value of the API's JSON to the property value the schema types it as.
func fromAPI(t *valueType, raw any) resource.PropertyValue {
	if raw == nil {
		return resource.NewNullProperty()
	}
	switch t.kind {
	case kindString:
		switch value := raw.(type) {
		case string:
			return resource.NewStringProperty(value)
		case float64:
			return resource.NewStringProperty(strconv.FormatFloat(value, 'f', -1, 64))
		case bool:
			return resource.NewStringProperty(strconv.FormatBool(value))
		}
	case kindJSON:
		encoded, err := json.Marshal(raw)
		if err == nil {
			return resource.NewStringProperty(string(encoded))
		}
	case kindList:
		if items, ok := raw.([]any); ok {
			out := make([]resource.PropertyValue, len(items))
			for i, item := range items {
				out[i] = fromAPI(t.elem, item)
			}
			return resource.NewArrayProperty(out)
		}
	case kindMap:
		if entries, ok := raw.(map[string]any); ok {
			out := resource.PropertyMap{}
			for key, item := range entries {
				out[resource.PropertyKey(key)] = fromAPI(t.elem, item)
			}
			return resource.NewObjectProperty(out)
		}
	case kindObject:
		if entries, ok := raw.(map[string]any); ok {
			out := resource.PropertyMap{}
			for _, a := range t.obj.attrs {
				if value, present := entries[a.api]; present && value != nil {
					out[resource.PropertyKey(a.name)] = fromAPI(a.typ, value)
				}
			}
			return resource.NewObjectProperty(out)
		}
	}
	return resource.NewPropertyValue(raw)
}

// outputsFrom builds a resource's outputs from the API's answer: every property of the schema (null
// when the API has none), the URL parts and the values the API never returns taken from the inputs,
// secrets kept secret.
func outputsFrom(r *resourceType, result map[string]any, inputs resource.PropertyMap) resource.PropertyMap {
	outputs := resource.PropertyMap{}
	for _, a := range r.schema.attrs {
		key := resource.PropertyKey(a.name)
		value := resource.NewNullProperty()
		if a.inPath || a.keepInput || a.local {
			if given, ok := inputs[key]; ok {
				value = given
			}
		} else {
			value = fromAPI(a.typ, result[a.api])
		}
		outputs[key] = secretIf(a.secret || inputs[key].ContainsSecrets(), value)
	}
	return outputs
}

// plannedOutputs are the outputs a preview shows: the inputs, the old outputs for what cannot
// change, and unknowns for what only the API will tell.
func plannedOutputs(r *resourceType, inputs, oldInputs, oldOutputs resource.PropertyMap) resource.PropertyMap {
	unknown := resource.MakeComputed(resource.NewStringProperty(""))
	outputs := resource.PropertyMap{}
	for _, a := range r.schema.attrs {
		key := resource.PropertyKey(a.name)
		var value resource.PropertyValue
		switch {
		case a.input && !isUnset(inputs, a.name):
			value = inputs[key]
		case oldOutputs == nil:
			value = resource.NewNullProperty()
			if a.computed && !a.inPath && !a.keepInput && !a.local {
				value = unknown
			}
		case a.rewritten:
			value = unknown
		case a.input && !isUnset(oldInputs, a.name):
			value = unknown // no longer set: the API picks the value
		default:
			value = oldOutputs[key]
		}
		outputs[key] = secretIf(a.secret || inputs[key].ContainsSecrets(), value)
	}
	return outputs
}

// inputsFromOutputs projects freshly read outputs onto the shape of the old inputs, so a refresh
// records drift in the inputs without inventing inputs the program never set; a value the API
// stores in its own spelling ("direct.example.com" for "direct") keeps the program's.
func inputsFromOutputs(o *objectType, oldInputs, outputs resource.PropertyMap) resource.PropertyMap {
	inputs := resource.PropertyMap{}
	for _, a := range o.attrs {
		key := resource.PropertyKey(a.name)
		if !a.input {
			continue
		}
		old, had := oldInputs[key]
		if oldInputs != nil && (!had || old.IsNull()) {
			continue // the program did not set it
		}
		if a.inPath || a.keepInput || a.local {
			if had {
				inputs[key] = old
			} else if v, ok := outputs[key]; ok && !v.IsNull() {
				inputs[key] = v
			}
			continue
		}
		fresh, ok := outputs[key]
		if !ok || fresh.IsNull() {
			continue
		}
		inputs[key] = secretIf(old.ContainsSecrets(), project(a, a.typ, plain(old), plain(fresh)))
	}
	return inputs
}

func project(a *attribute, t *valueType, old, fresh resource.PropertyValue) resource.PropertyValue {
	switch {
	case t.kind == kindString && a.sameValue != nil && old.IsString() && fresh.IsString():
		if a.sameValue(old.StringValue(), fresh.StringValue()) {
			return old
		}
	case t.kind == kindList && fresh.IsArray():
		items := fresh.ArrayValue()
		out := make([]resource.PropertyValue, len(items))
		for i, item := range items {
			previous := resource.NewNullProperty()
			if old.IsArray() && i < len(old.ArrayValue()) {
				previous = old.ArrayValue()[i]
			}
			out[i] = project(a, t.elem, previous, item)
		}
		return resource.NewArrayProperty(out)
	case t.kind == kindMap && fresh.IsObject():
		out := resource.PropertyMap{}
		for key, item := range fresh.ObjectValue() {
			previous := resource.NewNullProperty()
			if old.IsObject() {
				previous = old.ObjectValue()[key]
			}
			out[key] = project(a, t.elem, previous, item)
		}
		return resource.NewObjectProperty(out)
	case t.kind == kindObject && fresh.IsObject():
		var oldObject resource.PropertyMap
		if old.IsObject() {
			oldObject = old.ObjectValue()
		}
		return resource.NewObjectProperty(inputsFromOutputs(t.obj, oldObject, fresh.ObjectValue()))
	}
	return fresh
}

// sortedKeys: deterministic order for messages and failures.
func sortedKeys(m resource.PropertyMap) []resource.PropertyKey {
	keys := make([]resource.PropertyKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func indexPath(prefix string, i int) string { return fmt.Sprintf("%s[%d]", prefix, i) }
