package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// The provider's configuration, as pulumi-cloudflare 6.x has it (`cloudflare:<key>`), each key
// falling back to the environment variable the upstream provider reads.

const defaultBaseURL = "https://api.cloudflare.com/client/v4"

type configKey struct {
	env       string
	sensitive bool
	pattern   *regexp.Regexp // the upstream validator, when it has one
	problem   string
}

var configKeys = map[string]configKey{
	"apiToken": {env: "CLOUDFLARE_API_TOKEN", sensitive: true, pattern: regexp.MustCompile(`^[0-9A-Za-z\-_]{40,80}$`),
		problem: "API tokens must only contain characters a-z, A-Z, 0-9, hyphens and underscores (40 to 80 of them)"},
	"apiKey": {env: "CLOUDFLARE_API_KEY", sensitive: true, pattern: regexp.MustCompile(`^[0-9A-Za-z\-_]{37,60}$`),
		problem: "API key must only contain characters 0-9, a-z, A-Z, hyphens and underscores"},
	"apiUserServiceKey":       {env: "CLOUDFLARE_API_USER_SERVICE_KEY", sensitive: true},
	"email":                   {env: "CLOUDFLARE_EMAIL"},
	"baseUrl":                 {env: "CLOUDFLARE_BASE_URL"},
	"userAgentOperatorSuffix": {env: "CLOUDFLARE_USER_AGENT_OPERATOR_SUFFIX"},
}

// Keys the engine adds to any provider's configuration.
var engineConfigKeys = map[string]bool{"version": true, "pluginDownloadURL": true}

type providerConfig struct {
	values map[string]string
}

// checkConfig validates the configuration without looking at the environment (that is for
// Configure): unknown keys, values that are not strings, the upstream validators, and the
// upstream rule that at most one kind of credential is given.
func checkConfig(news resource.PropertyMap) []plugin.CheckFailure {
	var failures []plugin.CheckFailure
	fail := func(key, format string, args ...any) {
		failures = append(failures, plugin.CheckFailure{Property: resource.PropertyKey(key),
			Reason: fmt.Sprintf(format, args...)})
	}
	set := map[string]bool{}
	for _, key := range sortedKeys(news) {
		name := string(key)
		value := plain(news[key])
		if engineConfigKeys[name] || resource.IsInternalPropertyKey(key) {
			continue
		}
		spec, known := configKeys[name]
		switch {
		case !known:
			fail(name, "the Cloudflare provider has no configuration key %q (it has: %s)", name, configKeyNames())
		case value.IsNull() || value.IsComputed():
		case !value.IsString():
			fail(name, "must be a string, not %s", value.TypeString())
		case spec.pattern != nil && !spec.pattern.MatchString(value.StringValue()):
			fail(name, "%s", spec.problem)
		case name == "baseUrl":
			if err := checkBaseURL(value.StringValue()); err != nil {
				fail(name, "%v", err)
			}
		}
		if known && !value.IsNull() {
			set[name] = true
		}
	}
	credentials := 0
	for _, name := range []string{"apiToken", "apiKey", "apiUserServiceKey"} {
		if set[name] {
			credentials++
		}
	}
	if credentials > 1 {
		fail("apiToken", "must provide only one of apiKey, apiToken, apiUserServiceKey")
	}
	if set["apiKey"] && !set["email"] {
		fail("apiKey", "apiKey also requires email")
	}
	return failures
}

func checkBaseURL(raw string) error {
	parsed, err := url.Parse(raw)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	return nil
}

func configKeyNames() string {
	names := make([]string, 0, len(configKeys))
	for name := range configKeys {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// newProviderConfig takes each key from the configuration, else from its environment variable.
func newProviderConfig(inputs resource.PropertyMap) (*providerConfig, error) {
	if failures := checkConfig(inputs); len(failures) > 0 {
		return nil, fmt.Errorf("cloudflare:%s: %s", failures[0].Property, failures[0].Reason)
	}
	config := &providerConfig{values: map[string]string{}}
	for name, spec := range configKeys {
		if value, ok := stringInput(inputs, name); ok {
			config.values[name] = value
		} else if value, ok := os.LookupEnv(spec.env); ok && value != "" {
			config.values[name] = value
		}
	}
	if raw, ok := config.values["baseUrl"]; ok {
		if err := checkBaseURL(raw); err != nil {
			return nil, fmt.Errorf("cloudflare:baseUrl: %v", err)
		}
	}
	return config, nil
}

func (c *providerConfig) baseURL() string {
	if value, ok := c.values["baseUrl"]; ok {
		return value
	}
	return defaultBaseURL
}

// client builds the API client; without any credential it refuses, naming what to set, rather
// than letting every call come back as an authentication error.
func (c *providerConfig) client() (*client, error) {
	headers := http.Header{}
	agent := "pulumi-resource-cloudflare/" + version + " (bazbii twin stand-in)"
	if suffix := c.values["userAgentOperatorSuffix"]; suffix != "" {
		agent += " " + suffix
	}
	headers.Set("User-Agent", agent)
	switch {
	case c.values["apiToken"] != "":
		headers.Set("Authorization", "Bearer "+c.values["apiToken"])
	case c.values["apiKey"] != "":
		headers.Set("X-Auth-Key", c.values["apiKey"])
		headers.Set("X-Auth-Email", c.values["email"])
	case c.values["apiUserServiceKey"] != "":
		headers.Set("X-Auth-User-Service-Key", c.values["apiUserServiceKey"])
	default:
		return nil, fmt.Errorf("no Cloudflare credentials: set cloudflare:apiToken (as a secret) or the " +
			"CLOUDFLARE_API_TOKEN environment variable")
	}
	return &client{baseURL: c.baseURL(), headers: headers, http: &http.Client{Timeout: 60 * time.Second},
		retries: 2, backoff: 500 * time.Millisecond}, nil
}
