package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

func asJSON(t *testing.T, v any) string {
	t.Helper()
	encoded, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(encoded)
}

func TestRequestBodyUsesTheAPIsNamesAndLeavesTheURLPartsOut(t *testing.T) {
	pool := requestBody(mustType(t, poolToken).schema, props(map[string]any{
		"accountId": "a", "name": "p", "minimumOrigins": 1.0,
		"origins": []any{map[string]any{"address": "x", "header": map[string]any{"hosts": []any{"h"}}}},
	}))
	want := `{"minimum_origins":1,"name":"p","origins":[{"address":"x","header":{"Host":["h"]}}]}`
	if got := asJSON(t, pool); got != want {
		t.Errorf("pool body\n got %s\nwant %s", got, want)
	}
	config := requestBody(mustType(t, configToken).schema, props(map[string]any{
		"accountId": "a", "tunnelId": "t",
		"config": map[string]any{"ingresses": []any{
			map[string]any{"hostname": "api.example", "service": "https://localhost:8443",
				"originRequest": map[string]any{"noTlsVerify": true, "matchSnItoHost": true,
					"access": map[string]any{"audTags": []any{"aud"}, "teamName": "team"}}},
			map[string]any{"service": "http_status:404"}}},
	}))
	want = `{"config":{"ingress":[{"hostname":"api.example","originRequest":{"access":{"audTag":["aud"],"teamName":"team"},` +
		`"matchSNItoHost":true,"noTLSVerify":true},"service":"https://localhost:8443"},{"service":"http_status:404"}]}}`
	if got := asJSON(t, config); got != want {
		t.Errorf("configuration body\n got %s\nwant %s", got, want)
	}
	lb := requestBody(mustType(t, lbToken).schema, props(map[string]any{
		"zoneId": "z", "randomSteering": map[string]any{"defaultWeight": 0.0, "poolWeights": map[string]any{"poolOne": 0.9}},
	}))
	// map keys are data (pool ids), never renamed
	if got := asJSON(t, lb); got != `{"random_steering":{"default_weight":0,"pool_weights":{"poolOne":0.9}}}` {
		t.Errorf("load balancer body %s", got)
	}
}

func TestOutputsComeFromTheAPIWithSecretsKeptAndComputedFieldsFilled(t *testing.T) {
	r := mustType(t, tunnelToken)
	inputs := props(map[string]any{"accountId": "a", "name": "t", "configSrc": "cloudflare"})
	inputs["tunnelSecret"] = resource.MakeSecret(resource.NewStringProperty("c2VjcmV0"))
	outputs := outputsFrom(r, map[string]any{"id": "u", "name": "t", "config_src": "cloudflare", "status": "inactive",
		"metadata": map[string]any{}, "created_at": "2026-01-01T00:00:00Z", "connections": []any{}}, inputs)
	if !outputs["tunnelSecret"].IsSecret() || outputs["tunnelSecret"].SecretValue().Element.StringValue() != "c2VjcmV0" {
		t.Errorf("the secret must come back from the inputs, still secret: %v", outputs["tunnelSecret"])
	}
	if outputs["accountId"].StringValue() != "a" || outputs["status"].StringValue() != "inactive" ||
		outputs["metadata"].StringValue() != "{}" || !outputs["deletedAt"].IsNull() {
		t.Errorf("outputs: %v", outputs)
	}
	for _, a := range r.schema.attrs {
		if _, ok := outputs[resource.PropertyKey(a.name)]; !ok {
			t.Errorf("output %s missing", a.name)
		}
	}
}

func TestARefreshKeepsTheProgramsSpellingAndShape(t *testing.T) {
	r := mustType(t, poolToken)
	oldInputs := props(map[string]any{"accountId": "a", "name": "p", "origins": []any{
		map[string]any{"address": "x", "weight": 1.0, "enabled": true, "flattenCname": true}}})
	outputs := outputsFrom(r, map[string]any{"name": "p", "origins": []any{map[string]any{
		"address": "x", "weight": 0.5, "enabled": true, "flatten_cname": true, "port": 0.0, "disabled_at": nil}},
		"load_shedding": map[string]any{"default_percent": 0.0}}, oldInputs)
	inputs := inputsFromOutputs(r.schema, oldInputs, outputs)
	want := props(map[string]any{"accountId": "a", "name": "p", "origins": []any{
		map[string]any{"address": "x", "weight": 0.5, "enabled": true, "flattenCname": true}}})
	if !inputs.DeepEquals(want) {
		t.Errorf("refreshed inputs\n got %v\nwant %v", inputs, want)
	}
	record := mustType(t, recordToken)
	recordInputs := props(map[string]any{"zoneId": "z", "name": "direct", "type": "A", "ttl": 1.0})
	refreshed := inputsFromOutputs(record.schema, recordInputs,
		outputsFrom(record, map[string]any{"name": "direct.example.com", "type": "A", "ttl": 1.0}, recordInputs))
	if refreshed["name"].StringValue() != "direct" {
		t.Errorf("the API's full name for a relative one is no drift, got %v", refreshed["name"])
	}
}

func TestPreviewOutputsAreUnknownWhereOnlyTheAPIKnows(t *testing.T) {
	r := mustType(t, lbToken)
	inputs := props(map[string]any{"zoneId": "z", "name": "api.example", "proxied": true})
	planned := plannedOutputs(r, inputs, nil, nil)
	if !planned["createdOn"].IsComputed() || !planned["zoneName"].IsComputed() || !planned["proxied"].BoolValue() {
		t.Errorf("planned create outputs: %v", planned)
	}
	old := props(map[string]any{"zoneId": "z", "name": "api.example", "proxied": true, "createdOn": "then",
		"modifiedOn": "then", "zoneName": "example"})
	planned = plannedOutputs(r, inputs, inputs, old)
	if planned["createdOn"].StringValue() != "then" || !planned["modifiedOn"].IsComputed() {
		t.Errorf("planned update outputs: %v", planned)
	}
}

// fakeAPI records each call and answers from a script.
type fakeAPI struct {
	mu      sync.Mutex
	calls   []string
	bodies  []string
	answers []func(w http.ResponseWriter)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	f.bodies = append(f.bodies, string(body))
	answer := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	answer(w)
}

func reply(status int, document string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, document)
	}
}

func configured(t *testing.T, url string) *cloudflareProvider {
	t.Helper()
	p := newProvider()
	inputs := props(map[string]any{"baseUrl": url + "/client/v4", "version": "6.23.1"})
	inputs["apiToken"] = resource.MakeSecret(resource.NewStringProperty(strings.Repeat("t", 40)))
	if _, err := p.Configure(context.Background(), plugin.ConfigureRequest{Inputs: inputs}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateSurfacesCloudflaresCodeAndMessage(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(400, `{"success":false,"errors":[{"code":1002,`+
		`"message":"random_steering.pool_weights.p1: 1.5 is not in range [0, 1]: validation failed"}],"result":null}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	p := configured(t, server.URL)
	_, err := p.Create(context.Background(), plugin.CreateRequest{Type: lbToken, Name: "traffic-lb",
		Properties: props(map[string]any{"zoneId": "z", "name": "api.example"})})
	if err == nil || !strings.Contains(err.Error(), "[1002] random_steering.pool_weights.p1: 1.5 is not in range") ||
		!strings.Contains(err.Error(), "traffic-lb") {
		t.Fatalf("want Cloudflare's code and message with the resource's name, got %v", err)
	}
	if want := "POST /client/v4/zones/z/load_balancers Bearer " + strings.Repeat("t", 40); api.calls[0] != want {
		t.Errorf("call %q, want %q", api.calls[0], want)
	}
}

func TestAPreviewCreateOrUpdateCallsNothing(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(500, `{}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	p := configured(t, server.URL)
	inputs := props(map[string]any{"zoneId": "z", "name": "api.example"})
	if _, err := p.Create(context.Background(), plugin.CreateRequest{Type: lbToken, Properties: inputs, Preview: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Update(context.Background(), plugin.UpdateRequest{Type: lbToken, ID: "l", OldInputs: inputs,
		OldOutputs: inputs, NewInputs: inputs, Preview: true}); err != nil {
		t.Fatal(err)
	}
	if len(api.calls) != 0 {
		t.Errorf("a preview called the API: %v", api.calls)
	}
}

func TestTunnelUpdatesArePatchesWithoutTheConfigurationSource(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(200, `{"success":true,"errors":[],"result":{"id":"u","name":"n"}}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	p := configured(t, server.URL)
	inputs := props(map[string]any{"accountId": "a", "name": "n", "configSrc": "cloudflare"})
	if _, err := p.Update(context.Background(), plugin.UpdateRequest{Type: tunnelToken, ID: "u", NewInputs: inputs}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(api.calls[0], "PATCH /client/v4/accounts/a/cfd_tunnel/u ") || api.bodies[0] != `{"name":"n"}` {
		t.Errorf("got %v %v", api.calls, api.bodies)
	}
}

func TestDeletingAConfigurationCallsNothingAndAGoneObjectIsDeleted(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(404, `{"success":false,"errors":[{"code":81044,`+
		`"message":"Record does not exist."}],"result":null}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	p := configured(t, server.URL)
	if _, err := p.Delete(context.Background(), plugin.DeleteRequest{Type: configToken, ID: "t",
		Outputs: props(map[string]any{"accountId": "a", "tunnelId": "t"})}); err != nil || len(api.calls) != 0 {
		t.Fatalf("deleting a configuration: %v, calls %v", err, api.calls)
	}
	if _, err := p.Delete(context.Background(), plugin.DeleteRequest{Type: recordToken, ID: "r",
		Outputs: props(map[string]any{"zoneId": "z"})}); err != nil {
		t.Fatalf("a record already gone is deleted: %v", err)
	}
	read, err := p.Read(context.Background(), plugin.ReadRequest{Type: recordToken, ID: "r",
		State: props(map[string]any{"zoneId": "z"})})
	if err != nil || read.Outputs != nil {
		t.Fatalf("reading a record that is gone must answer no outputs, got %v %v", read, err)
	}
}

func TestImportIdsNameTheAccountOrZone(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(200, `{"success":true,"errors":[],`+
		`"result":{"tunnel_id":"t1","version":3,"config":{"ingress":[{"service":"http_status:404"}]}}}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	p := configured(t, server.URL)
	read, err := p.Read(context.Background(), plugin.ReadRequest{Type: configToken, ID: "acct/t1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(api.calls[0], "GET /client/v4/accounts/acct/cfd_tunnel/t1/configurations ") ||
		read.ID != "t1" || read.Outputs["tunnelId"].StringValue() != "t1" || read.Inputs["accountId"].StringValue() != "acct" {
		t.Errorf("import read: %v %+v", api.calls, read)
	}
	if _, err := p.Read(context.Background(), plugin.ReadRequest{Type: recordToken, ID: "r"}); err == nil ||
		!strings.Contains(err.Error(), "<zoneId>/<id>") {
		t.Errorf("an import id without its zone must say how to give it, got %v", err)
	}
}

func TestTheClientRetriesWhatCloudflareAsksToRetry(t *testing.T) {
	api := &fakeAPI{answers: []func(http.ResponseWriter){reply(503, `{"success":false,"errors":[]}`),
		reply(200, `{"success":true,"errors":[],"result":{"id":"m"}}`)}}
	server := httptest.NewServer(api)
	defer server.Close()
	c := &client{baseURL: server.URL, headers: http.Header{}, http: server.Client(), retries: 2, backoff: time.Millisecond}
	result, err := c.call(context.Background(), "GET", "x", nil)
	if err != nil || result["id"] != "m" || len(api.calls) != 2 {
		t.Fatalf("got %v %v after %v", result, err, api.calls)
	}
}

func TestProviderConfigurationIsCheckedAsUpstream(t *testing.T) {
	token := resource.MakeSecret(resource.NewStringProperty(strings.Repeat("t", 40)))
	cases := map[string]struct {
		config map[string]any
		want   string
	}{
		"unknown key":      {map[string]any{"apiTokn": "x"}, `no configuration key "apiTokn"`},
		"short token":      {map[string]any{"apiToken": "short"}, "API tokens must only contain"},
		"two credentials":  {map[string]any{"apiToken": strings.Repeat("t", 40), "apiKey": strings.Repeat("k", 37), "email": "e"}, "only one of"},
		"key without mail": {map[string]any{"apiKey": strings.Repeat("k", 37)}, "also requires email"},
		"not a URL":        {map[string]any{"baseUrl": "api.cloudflare.com"}, "is not an http(s) URL"},
	}
	for name, c := range cases {
		failures := checkConfig(props(c.config))
		if len(failures) == 0 || !strings.Contains(failures[0].Reason, c.want) {
			t.Errorf("%s: want %q, got %v", name, c.want, failures)
		}
	}
	good := props(map[string]any{"baseUrl": "http://127.0.0.1:1/client/v4", "version": "6.23.1"})
	good["apiToken"] = token
	if failures := checkConfig(good); len(failures) != 0 {
		t.Errorf("a good configuration was refused: %v", failures)
	}
	t.Setenv("CLOUDFLARE_API_TOKEN", strings.Repeat("e", 40))
	t.Setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:2/client/v4")
	config, err := newProviderConfig(props(map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.client()
	if err != nil || c.baseURL != "http://127.0.0.1:2/client/v4" ||
		c.headers.Get("Authorization") != "Bearer "+strings.Repeat("e", 40) {
		t.Errorf("the environment variables must configure the provider: %v %v", c, err)
	}
}

func TestWithoutCredentialsTheProviderSaysWhatToSet(t *testing.T) {
	for _, env := range []string{"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_API_USER_SERVICE_KEY"} {
		t.Setenv(env, "")
	}
	config, err := newProviderConfig(props(map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.client(); err == nil || !strings.Contains(err.Error(), "cloudflare:apiToken") {
		t.Errorf("want an error naming cloudflare:apiToken, got %v", err)
	}
	if config.baseURL() != defaultBaseURL {
		t.Errorf("default base URL %q", config.baseURL())
	}
}

func TestPluginVersion(t *testing.T) {
	info, err := newProvider().GetPluginInfo(context.Background())
	if err != nil || info.Version.String() != "6.23.1" {
		t.Errorf("plugin version %v %v", info.Version, err)
	}
}
