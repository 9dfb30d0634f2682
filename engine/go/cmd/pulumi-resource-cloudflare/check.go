package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// Check validates a resource's inputs against its schema, the way the Terraform provider's plan
// does before any API call: every property must be one the resource has and the program may set,
// of the right type, within its validators (enumerations, ranges, conflicts); required properties
// must be there. Then the Terraform schema's defaults fill in what the program left out, so that
// removing a property from the program diffs against its default, as a Terraform plan does.
// Unknown values (outputs not known during a preview) pass unchecked; secrets stay secrets.

type checker struct {
	resource string
	failures []plugin.CheckFailure
}

func (c *checker) fail(path, format string, args ...any) {
	c.failures = append(c.failures, plugin.CheckFailure{
		Property: resource.PropertyKey(path),
		Reason:   fmt.Sprintf(format, args...), // the engine prints the property's path before it
	})
}

func checkInputs(r *resourceType, news resource.PropertyMap) (resource.PropertyMap, []plugin.CheckFailure) {
	c := &checker{resource: r.name}
	checked := c.object("", r.schema, news)
	return checked, c.failures
}

func (c *checker) object(path string, o *objectType, given resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, key := range sortedKeys(given) {
		value := given[key]
		if path == "" && resource.IsInternalPropertyKey(key) {
			out[key] = value
			continue
		}
		where := joinPath(path, string(key))
		a := o.byName[string(key)]
		switch {
		case a == nil:
			c.fail(where, "%s has no property %q (its inputs are: %s)", c.resource, string(key), inputNames(o))
			continue
		case !a.input:
			c.fail(where, "is set by Cloudflare; a program cannot set it")
			continue
		}
		out[key] = c.value(where, a, a.typ, value)
	}
	for _, a := range o.attrs {
		key := resource.PropertyKey(a.name)
		where := joinPath(path, a.name)
		unset := isUnset(given, a.name)
		if a.required && unset {
			c.fail(where, "missing required property %q", a.name)
		}
		if unset && a.deflt != nil {
			out[key] = defaultValue(a.deflt)
		}
		if a.conflictsWith != "" && !unset && !isUnset(given, a.conflictsWith) && a.name < a.conflictsWith {
			c.fail(where, "conflicts with %q: set one of them", a.conflictsWith)
		}
	}
	return out
}

func (c *checker) value(path string, a *attribute, t *valueType, v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsComputed() || v.IsOutput():
		return v // not known before the update; checked when it is
	case v.IsSecret():
		return resource.MakeSecret(c.value(path, a, t, v.SecretValue().Element))
	case v.IsNull():
		return v
	}
	switch t.kind {
	case kindString:
		if !v.IsString() {
			c.wrongType(path, t, v)
		} else if len(a.oneOf) > 0 && !oneOfFold(a.oneOf, v.StringValue()) {
			c.fail(path, "%q is not one of %s", v.StringValue(), quoted(a.oneOf))
		}
	case kindBool:
		if !v.IsBool() {
			c.wrongType(path, t, v)
		}
	case kindInt, kindNumber:
		if !v.IsNumber() {
			c.wrongType(path, t, v)
			break
		}
		n := v.NumberValue()
		if t.kind == kindInt && n != math.Trunc(n) {
			c.fail(path, "must be an integer, not %v", n)
		}
		if (a.min != nil && n < *a.min) || (a.max != nil && n > *a.max) {
			c.fail(path, "%v is not between %s", n, bounds(a))
		}
	case kindStringOrNumber:
		if !v.IsString() && !v.IsNumber() {
			c.wrongType(path, t, v)
		}
	case kindList:
		if !v.IsArray() {
			c.wrongType(path, t, v)
			break
		}
		items := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, item := range v.ArrayValue() {
			items[i] = c.value(indexPath(path, i), a, t.elem, item)
		}
		return resource.NewArrayProperty(items)
	case kindMap:
		if !v.IsObject() {
			c.wrongType(path, t, v)
			break
		}
		entries := resource.PropertyMap{}
		for _, key := range sortedKeys(v.ObjectValue()) {
			entries[key] = c.value(joinPath(path, string(key)), a, t.elem, v.ObjectValue()[key])
		}
		return resource.NewObjectProperty(entries)
	case kindObject:
		if !v.IsObject() {
			c.wrongType(path, t, v)
			break
		}
		return resource.NewObjectProperty(c.object(path, t.obj, v.ObjectValue()))
	}
	return v
}

func (c *checker) wrongType(path string, t *valueType, v resource.PropertyValue) {
	c.fail(path, "must be %s, not %s", t.describe(), v.TypeString())
}

func defaultValue(value any) resource.PropertyValue {
	switch v := value.(type) {
	case int:
		return resource.NewNumberProperty(float64(v))
	case float64:
		return resource.NewNumberProperty(v)
	}
	return resource.NewPropertyValue(value)
}

func oneOfFold(allowed []string, value string) bool {
	for _, a := range allowed {
		if strings.EqualFold(a, value) {
			return true
		}
	}
	return false
}

func quoted(values []string) string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(out, ", ")
}

func bounds(a *attribute) string {
	lo, hi := "-inf", "+inf"
	if a.min != nil {
		lo = fmt.Sprint(*a.min)
	}
	if a.max != nil {
		hi = fmt.Sprint(*a.max)
	}
	return lo + " and " + hi
}

func inputNames(o *objectType) string {
	var names []string
	for _, a := range o.attrs {
		if a.input {
			names = append(names, a.name)
		}
	}
	return strings.Join(names, ", ")
}
