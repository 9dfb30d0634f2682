package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

const (
	poolToken    = "cloudflare:index/loadBalancerPool:LoadBalancerPool"
	lbToken      = "cloudflare:index/loadBalancer:LoadBalancer"
	recordToken  = "cloudflare:index/dnsRecord:DnsRecord"
	tunnelToken  = "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared"
	configToken  = "cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig"
	monitorToken = "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor"
)

func props(m map[string]any) resource.PropertyMap { return resource.NewPropertyMapFromMap(m) }

func mustType(t *testing.T, token string) *resourceType {
	t.Helper()
	r, err := lookup(token)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func failuresByProperty(failures []plugin.CheckFailure) map[string]string {
	out := map[string]string{}
	for _, f := range failures {
		out[string(f.Property)] = f.Reason
	}
	return out
}

func TestEveryTypeOfTheProgramIsRegisteredAndOthersAreRefusedByName(t *testing.T) {
	for _, token := range []string{poolToken, lbToken, recordToken, tunnelToken, configToken, monitorToken} {
		mustType(t, token)
	}
	_, err := lookup("cloudflare:index/zone:Zone")
	if err == nil || !strings.Contains(err.Error(), "cloudflare:index/zone:Zone is not implemented") {
		t.Fatalf("an unknown type must be refused naming it, got %v", err)
	}
}

func TestSnakeCaseGivesTheAPIKeys(t *testing.T) {
	for pulumiName, apiName := range map[string]string{"minimumOrigins": "minimum_origins", "ipv4Only": "ipv4_only",
		"sessionAffinityTtl": "session_affinity_ttl", "name": "name"} {
		if got := snakeCase(pulumiName); got != apiName {
			t.Errorf("snakeCase(%q) = %q, want %q", pulumiName, got, apiName)
		}
	}
}

func TestCheckAppliesTheTerraformDefaultsAndKeepsWhatWasSet(t *testing.T) {
	r := mustType(t, poolToken)
	checked, failures := checkInputs(r, props(map[string]any{
		"accountId": "a", "name": "bazbii-server1", "minimumOrigins": 2.0,
		"origins": []any{map[string]any{"address": "x.cfargotunnel.com", "header": map[string]any{"hosts": []any{"h"}}}},
	}))
	if len(failures) > 0 {
		t.Fatalf("unexpected failures %v", failures)
	}
	origin := checked["origins"].ArrayValue()[0].ObjectValue()
	if origin["weight"].NumberValue() != 1 || !origin["enabled"].BoolValue() || !origin["flattenCname"].BoolValue() {
		t.Errorf("origin defaults not applied: %v", origin)
	}
	if checked["minimumOrigins"].NumberValue() != 2 || !checked["enabled"].BoolValue() || checked["description"].StringValue() != "" {
		t.Errorf("pool defaults wrong: %v", checked)
	}
	if _, ok := checked["loadShedding"]; ok {
		t.Errorf("a computed object without a default must stay unset, got %v", checked["loadShedding"])
	}
}

func TestCheckNamesEachProblemsProperty(t *testing.T) {
	r := mustType(t, poolToken)
	_, failures := checkInputs(r, props(map[string]any{
		"accountId": "a", "colour": "blue", "createdOn": "now", "checkRegions": []any{"WEU", "MARS"},
		"origins": []any{map[string]any{"address": "x", "weight": 1.5}, map[string]any{"address": 7.0}},
	}))
	got := failuresByProperty(failures)
	for property, reason := range map[string]string{
		"name":               "missing required property",
		"colour":             `LoadBalancerPool has no property "colour"`,
		"createdOn":          "is set by Cloudflare",
		"checkRegions[1]":    `"MARS" is not one of`,
		"origins[0].weight":  "1.5 is not between 0 and 1",
		"origins[1].address": "must be a string, not number",
	} {
		if !strings.Contains(got[property], reason) {
			t.Errorf("%s: want a failure containing %q, got %q (all: %v)", property, reason, got[property], got)
		}
	}
	if len(got) != 6 {
		t.Errorf("want exactly 6 failures, got %v", got)
	}
}

func TestCheckEnumerationsAreCaseInsensitiveAsUpstream(t *testing.T) {
	_, failures := checkInputs(mustType(t, recordToken), props(map[string]any{
		"zoneId": "z", "name": "direct", "type": "cname", "ttl": 1.0, "content": "x.example"}))
	if len(failures) != 0 {
		t.Fatalf("unexpected failures %v", failures)
	}
}

func TestCheckRefusesConflictsAndNonIntegers(t *testing.T) {
	_, failures := checkInputs(mustType(t, recordToken), props(map[string]any{
		"zoneId": "z", "name": "x", "type": "A", "ttl": 1.0, "content": "192.0.2.1",
		"data": map[string]any{"flags": "x"}}))
	if !strings.Contains(failuresByProperty(failures)["content"], `conflicts with "data"`) {
		t.Errorf("content and data together must be refused, got %v", failures)
	}
	_, failures = checkInputs(mustType(t, monitorToken), props(map[string]any{"accountId": "a", "interval": 60.5}))
	if !strings.Contains(failuresByProperty(failures)["interval"], "must be an integer") {
		t.Errorf("a fractional interval must be refused, got %v", failures)
	}
}

func TestCheckLetsUnknownsThroughAndKeepsSecrets(t *testing.T) {
	r := mustType(t, tunnelToken)
	news := props(map[string]any{"accountId": "a", "name": "t"})
	news["tunnelSecret"] = resource.MakeSecret(resource.NewStringProperty("c2VjcmV0"))
	news["configSrc"] = resource.MakeComputed(resource.NewStringProperty(""))
	checked, failures := checkInputs(r, news)
	if len(failures) != 0 {
		t.Fatalf("unexpected failures %v", failures)
	}
	if !checked["tunnelSecret"].IsSecret() || !checked["configSrc"].IsComputed() {
		t.Errorf("secret or unknown lost: %v", checked)
	}
}

func TestDiffReplacesOnlyWhatTerraformReplaces(t *testing.T) {
	r := mustType(t, recordToken)
	base := map[string]any{"zoneId": "z", "name": "direct.example", "type": "A", "ttl": 3600.0, "content": "192.0.2.1"}
	changed := func(key string, value any) resource.PropertyMap {
		m := props(base)
		m[resource.PropertyKey(key)] = resource.NewPropertyValue(value)
		return m
	}
	if d := diffInputs(r, props(base), props(base)); d.Changes != plugin.DiffNone {
		t.Errorf("no change must diff as none, got %v", d)
	}
	update := diffInputs(r, props(base), changed("ttl", 300.0))
	if update.Changes != plugin.DiffSome || len(update.ReplaceKeys) != 0 ||
		update.DetailedDiff["ttl"].Kind != plugin.DiffUpdate {
		t.Errorf("a TTL change updates in place, got %+v", update)
	}
	replace := diffInputs(r, props(base), changed("type", "CNAME"))
	if !reflect.DeepEqual(replace.ReplaceKeys, []resource.PropertyKey{"type"}) ||
		replace.DetailedDiff["type"].Kind != plugin.DiffUpdateReplace {
		t.Errorf("a type change replaces, got %+v", replace)
	}
	zone := diffInputs(r, props(base), changed("zoneId", "other"))
	if !reflect.DeepEqual(zone.ReplaceKeys, []resource.PropertyKey{"zoneId"}) {
		t.Errorf("a zone change replaces, got %+v", zone)
	}
}

func TestDiffOfAWeightIsAnInPlaceUpdateOfItsProperty(t *testing.T) {
	r := mustType(t, lbToken)
	lb := func(weight float64) resource.PropertyMap {
		return props(map[string]any{"zoneId": "z", "name": "api.example", "defaultPools": []any{"p1"},
			"fallbackPool": "p1", "randomSteering": map[string]any{"poolWeights": map[string]any{"p1": weight}}})
	}
	d := diffInputs(r, lb(0.9), lb(0.5))
	if len(d.ReplaceKeys) != 0 || len(d.DetailedDiff) != 1 || d.DetailedDiff["randomSteering"].Kind != plugin.DiffUpdate ||
		!d.DetailedDiff["randomSteering"].InputDiff {
		t.Errorf("want an in-place update of randomSteering, got %+v", d)
	}
	removed := lb(0.9)
	delete(removed, "fallbackPool")
	if d := diffInputs(r, lb(0.9), removed); d.DetailedDiff["fallbackPool"].Kind != plugin.DiffDelete {
		t.Errorf("a property no longer set is a delete, got %+v", d)
	}
	unknown := lb(0.9)
	unknown["randomSteering"] = resource.MakeComputed(resource.NewStringProperty(""))
	if d := diffInputs(r, lb(0.9), unknown); d.Changes != plugin.DiffSome {
		t.Errorf("an unknown new value is a change, got %+v", d)
	}
}

func TestTunnelConfigSourceAndTunnelReplace(t *testing.T) {
	r := mustType(t, tunnelToken)
	old := props(map[string]any{"accountId": "a", "name": "t", "configSrc": "local"})
	renamed := props(map[string]any{"accountId": "a", "name": "u", "configSrc": "local"})
	moved := props(map[string]any{"accountId": "a", "name": "t", "configSrc": "cloudflare"})
	if d := diffInputs(r, old, renamed); len(d.ReplaceKeys) != 0 {
		t.Errorf("a rename is an update, got %+v", d)
	}
	if d := diffInputs(r, old, moved); !reflect.DeepEqual(d.ReplaceKeys, []resource.PropertyKey{"configSrc"}) {
		t.Errorf("moving the configuration source replaces, got %+v", d)
	}
	c := mustType(t, configToken)
	oldConfig := props(map[string]any{"accountId": "a", "tunnelId": "t1"})
	if d := diffInputs(c, oldConfig, props(map[string]any{"accountId": "a", "tunnelId": "t2"})); len(d.ReplaceKeys) != 1 {
		t.Errorf("another tunnel replaces the configuration, got %+v", d)
	}
}
