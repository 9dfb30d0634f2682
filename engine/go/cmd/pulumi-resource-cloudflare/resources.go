package main

import "strings"

// The six resource types the bazbii program registers through pulumi_cloudflare==6.23.1, with
// their properties as that SDK names and types them and what the upstream Terraform provider (v5,
// internal/services/<resource>/schema.go) says of each: required, computed, default, validators,
// RequiresReplace. API keys are the Terraform attribute names (the Cloudflare API's JSON) except
// where the bridge renamed a list to its plural (Terraform `ingress` -> Pulumi `ingresses`, `host`
// -> `hosts`, `aud_tag` -> `audTags`) or the API's JSON tag differs (`Host`, cloudflared's camelCase
// origin-request keys).

type resourceType struct {
	token  string
	name   string // for messages
	schema *objectType
	api    objectAPI
}

var resourceTypes = map[string]*resourceType{}

func register(token string, schema *valueType, api objectAPI) {
	name := token[strings.LastIndex(token, ":")+1:]
	resourceTypes[token] = &resourceType{token: token, name: name, schema: schema.obj, api: api}
}

func init() {
	register("cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor", loadBalancerMonitorSchema,
		&restAPI{scope: "accountId", scopeSegment: "accounts", collection: "load_balancers/monitors", updateMethod: "PUT"})
	register("cloudflare:index/loadBalancerPool:LoadBalancerPool", loadBalancerPoolSchema,
		&restAPI{scope: "accountId", scopeSegment: "accounts", collection: "load_balancers/pools", updateMethod: "PUT"})
	register("cloudflare:index/loadBalancer:LoadBalancer", loadBalancerSchema,
		&restAPI{scope: "zoneId", scopeSegment: "zones", collection: "load_balancers", updateMethod: "PUT"})
	register("cloudflare:index/dnsRecord:DnsRecord", dnsRecordSchema,
		&restAPI{scope: "zoneId", scopeSegment: "zones", collection: "dns_records", updateMethod: "PUT"})
	register("cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared", tunnelSchema,
		&restAPI{scope: "accountId", scopeSegment: "accounts", collection: "cfd_tunnel", updateMethod: "PATCH",
			// PATCH takes the name and the secret; config_src only changes by replacement.
			notPatched: []string{"configSrc"},
			// A deleted tunnel is still answered, with deleted_at set: it is gone for Pulumi.
			gone: func(result map[string]any) bool { return result["deleted_at"] != nil }})
	register("cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig",
		tunnelConfigSchema, tunnelConfigurationAPI{})
}

// ------------------------------------------------------------------------------------------ monitors
var loadBalancerMonitorSchema = object(
	in("accountId", tString, required, inPath, replaces),
	in("allowInsecure", tBool, def(false)),
	in("consecutiveDown", tInt),
	in("consecutiveUp", tInt),
	in("description", tString, def("")),
	in("expectedBody", tString, def("")),
	in("expectedCodes", tString, def("")),
	in("followRedirects", tBool, def(false)),
	in("header", mapOf(tStringList)),
	in("interval", tInt, def(60)),
	in("method", tString, computed),
	in("path", tString, computed),
	in("port", tInt),
	in("probeZone", tString, def("")),
	in("retries", tInt, def(2)),
	in("timeout", tInt, def(5)),
	in("type", tString, def("http"), oneOf("http", "https", "tcp", "udp_icmp", "icmp_ping", "smtp")),
	out("createdOn", tString),
	out("modifiedOn", tString, rewritten),
)

// ------------------------------------------------------------------------------------------ pools
var checkRegions = []string{"WNAM", "ENAM", "WEU", "EEU", "NSAM", "SSAM", "OC", "ME", "NAF", "SAF", "SAS", "SEAS",
	"NEAS", "ALL_REGIONS"}

var notificationFilterTarget = object(in("disable", tBool), in("healthy", tBool))

var loadBalancerPoolSchema = object(
	in("accountId", tString, required, inPath, replaces),
	in("checkRegions", tStringList, oneOf(checkRegions...)),
	in("description", tString, def("")),
	in("enabled", tBool, def(true)),
	in("healthSources", tStringList),
	in("latitude", tNumber),
	in("loadShedding", object(
		in("defaultPercent", tNumber, def(0.0), between(0, 100)),
		in("defaultPolicy", tString, def("random"), oneOf("random", "hash")),
		in("sessionPercent", tNumber, def(0.0), between(0, 100)),
		in("sessionPolicy", tString, def("hash"), oneOf("hash")),
	), computed),
	in("longitude", tNumber),
	in("minimumOrigins", tInt, def(1)),
	in("monitor", tString),
	in("monitorGroup", tString),
	in("name", tString, required),
	in("notificationEmail", tString, def("")),
	in("notificationFilter", object(
		in("origin", notificationFilterTarget),
		in("pool", notificationFilterTarget),
	), computed),
	in("originSteering", object(
		in("policy", tString, def("random"), oneOf("random", "hash", "least_outstanding_requests", "least_connections")),
	), computed),
	in("origins", listOf(object(
		in("address", tString),
		out("disabledAt", tString),
		in("enabled", tBool, def(true)),
		in("flattenCname", tBool, def(true)),
		in("header", object(in("hosts", tStringList, api("Host")))),
		in("name", tString),
		in("port", tInt, computed),
		in("virtualNetworkId", tString),
		in("weight", tNumber, def(1.0), between(0, 1)),
	)), required),
	out("createdOn", tString),
	out("disabledAt", tString),
	out("modifiedOn", tString, rewritten),
	out("networks", tStringList),
)

// ------------------------------------------------------------------------------------------ load balancers
var steeringPolicies = []string{"off", "geo", "random", "dynamic_latency", "proximity", "least_outstanding_requests",
	"least_connections"}
var sessionAffinities = []string{"none", "cookie", "ip_cookie", "header"}

func affinityAttributes(withDefaults bool) *valueType {
	// The load balancer's own attributes have no defaults in the Terraform schema (they were
	// commented out there: "fix the service response"); a rule's overrides have them.
	stringAttr := func(name, value string, values ...string) *attribute {
		if withDefaults {
			return in(name, tString, def(value), oneOf(values...))
		}
		return in(name, tString, computed, oneOf(values...))
	}
	requireAll := in("requireAllHeaders", tBool, computed)
	if withDefaults {
		requireAll = in("requireAllHeaders", tBool, def(false))
	}
	return object(
		in("drainDuration", tNumber, computed),
		in("headers", tStringList),
		requireAll,
		stringAttr("samesite", "Auto", "Auto", "Lax", "None", "Strict"),
		stringAttr("secure", "Auto", "Auto", "Always", "Never"),
		stringAttr("zeroDowntimeFailover", "none", "none", "temporary", "sticky"),
	)
}

var loadBalancerSchema = object(
	in("zoneId", tString, required, inPath, replaces),
	in("adaptiveRouting", object(in("failoverAcrossPools", tBool, def(false))), computed),
	in("countryPools", tPoolsByRegion, computed),
	in("defaultPools", tStringList, required),
	in("description", tString, computed),
	in("enabled", tBool, def(true)),
	in("fallbackPool", tString, required),
	in("locationStrategy", object(
		in("mode", tString, def("pop"), oneOf("pop", "resolver_ip")),
		in("preferEcs", tString, def("proximity"), oneOf("always", "never", "proximity", "geo")),
	), computed),
	in("name", tString, required, sameValue(sameHostname)),
	in("networks", tStringList, computed),
	in("popPools", tPoolsByRegion, computed),
	in("proxied", tBool, def(false)),
	in("randomSteering", object(
		in("defaultWeight", tNumber, def(1.0), between(0, 1)),
		// No validator on pool weights in the Terraform schema: Cloudflare judges them.
		in("poolWeights", mapOf(tNumber)),
	), computed),
	in("regionPools", tPoolsByRegion, computed),
	in("rules", listOf(object(
		in("condition", tString),
		in("disabled", tBool, def(false)),
		in("fixedResponse", object(
			in("contentType", tString),
			in("location", tString),
			in("messageBody", tString),
			in("statusCode", tInt),
		)),
		in("name", tString),
		in("overrides", object(
			in("adaptiveRouting", object(in("failoverAcrossPools", tBool, computed)), computed),
			in("countryPools", tPoolsByRegion, computed),
			in("defaultPools", tStringList),
			in("fallbackPool", tString),
			in("locationStrategy", object(
				in("mode", tString, computed, oneOf("pop", "resolver_ip")),
				in("preferEcs", tString, computed, oneOf("always", "never", "proximity", "geo")),
			), computed),
			in("popPools", tPoolsByRegion, computed),
			in("randomSteering", object(
				in("defaultWeight", tNumber, computed, between(0, 1)),
				in("poolWeights", mapOf(tNumber)),
			), computed),
			in("regionPools", tPoolsByRegion, computed),
			in("sessionAffinity", tString, computed, oneOf(sessionAffinities...)),
			in("sessionAffinityAttributes", affinityAttributes(true), computed),
			in("sessionAffinityTtl", tNumber, computed),
			in("steeringPolicy", tString, computed, oneOf(steeringPolicies...)),
			in("ttl", tNumber, computed),
		), computed),
		in("priority", tInt, def(0), atLeast(0)),
		in("terminates", tBool),
	)), computed),
	in("sessionAffinity", tString, def("none"), oneOf(sessionAffinities...)),
	in("sessionAffinityAttributes", affinityAttributes(false), computed),
	in("sessionAffinityTtl", tNumber, computed),
	in("steeringPolicy", tString, def(""), oneOf(steeringPolicies...)),
	in("ttl", tNumber, computed),
	out("createdOn", tString),
	out("modifiedOn", tString, rewritten),
	out("zoneName", tString),
)

// ------------------------------------------------------------------------------------------ DNS records
var dnsRecordTypes = []string{"A", "AAAA", "CNAME", "MX", "NS", "OPENPGPKEY", "PTR", "TXT", "CAA", "CERT", "DNSKEY",
	"DS", "HTTPS", "LOC", "NAPTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "URI"}

func byte255() option { return between(0, 255) }
func uint16() option  { return between(0, 65535) }
func locSize() option { return between(0, 90000000) }
func minutes() option { return between(0, 59) }
func seconds() option { return between(0, 59.999) }

var dnsRecordSchema = object(
	in("zoneId", tString, required, inPath, replaces),
	in("comment", tString),
	in("content", tString, computed, conflictsWith("data"), sameValue(sameContent)),
	in("data", object(
		in("algorithm", tNumber, byte255()),
		in("altitude", tNumber, between(-100000, 42849672.95)),
		in("certificate", tString),
		in("digest", tString),
		in("digestType", tNumber, byte255()),
		in("fingerprint", tString),
		in("flags", tStringOrNum),
		in("keyTag", tNumber, uint16()),
		in("latDegrees", tNumber, between(0, 90)),
		in("latDirection", tString, oneOf("N", "S")),
		in("latMinutes", tNumber, minutes()),
		in("latSeconds", tNumber, seconds()),
		in("longDegrees", tNumber, between(0, 180)),
		in("longDirection", tString, oneOf("E", "W")),
		in("longMinutes", tNumber, minutes()),
		in("longSeconds", tNumber, seconds()),
		in("matchingType", tNumber, byte255()),
		in("order", tNumber, uint16()),
		in("port", tNumber, uint16()),
		in("precisionHorz", tNumber, locSize()),
		in("precisionVert", tNumber, locSize()),
		in("preference", tNumber, uint16()),
		in("priority", tNumber, uint16()),
		in("protocol", tNumber, byte255()),
		in("publicKey", tString),
		in("regex", tString),
		in("replacement", tString),
		in("selector", tNumber, byte255()),
		in("service", tString),
		in("size", tNumber, locSize()),
		in("tag", tString),
		in("target", tString),
		in("type", tNumber, atLeast(0)),
		in("usage", tNumber, byte255()),
		in("value", tString),
		in("weight", tNumber, uint16()),
	), conflictsWith("content")),
	// A read option (shadow records in `meta`), not part of the record: never sent in a body.
	in("includeShadowMetadata", tBool, computed, local),
	in("name", tString, required, sameValue(sameHostname)),
	in("priority", tNumber, uint16()),
	in("privateRouting", tBool),
	in("proxied", tBool, def(false)),
	in("settings", object(
		in("flattenCname", tBool, computed),
		in("ipv4Only", tBool, computed),
		in("ipv6Only", tBool, computed),
	), computed),
	in("tags", tStringList, computed),
	in("ttl", tNumber, required),
	in("type", tString, required, replaces, oneOf(dnsRecordTypes...)),
	out("commentModifiedOn", tString),
	out("createdOn", tString),
	out("meta", tJSON),
	out("modifiedOn", tString, rewritten),
	out("proxiable", tBool),
	out("tagsModifiedOn", tString),
)

// ------------------------------------------------------------------------------------------ tunnels
var tunnelSchema = object(
	in("accountId", tString, required, inPath, replaces),
	// RequiresReplaceIfConfigured upstream: changing where the tunnel is configured makes a new tunnel.
	in("configSrc", tString, def("local"), oneOf("local", "cloudflare"), replaces),
	in("name", tString, required),
	// Sensitive, and never returned by the API (Terraform's no_refresh): outputs keep what was set.
	in("tunnelSecret", tString, secret, keepInput),
	out("accountTag", tString),
	out("connections", listOf(object(
		out("clientId", tString),
		out("clientVersion", tString),
		out("coloName", tString),
		out("id", tString),
		out("openedAt", tString),
		out("originIp", tString),
		out("uuid", tString),
	))),
	out("connsActiveAt", tString),
	out("connsInactiveAt", tString),
	out("createdAt", tString),
	out("deletedAt", tString),
	out("metadata", tJSON),
	out("remoteConfig", tBool),
	out("status", tString),
	out("tunType", tString),
)

// cloudflared's origin-request settings: camelCase JSON, with its own spelling of some initialisms.
func originRequest() *valueType {
	return camelObject(
		in("access", camelObject(
			in("audTags", tStringList, required, api("audTag")),
			in("required", tBool),
			in("teamName", tString, required),
		)),
		in("caPool", tString),
		in("connectTimeout", tInt),
		in("disableChunkedEncoding", tBool),
		in("http2Origin", tBool),
		in("httpHostHeader", tString),
		in("keepAliveConnections", tInt),
		in("keepAliveTimeout", tInt),
		in("matchSnItoHost", tBool, api("matchSNItoHost")),
		in("noHappyEyeballs", tBool),
		in("noTlsVerify", tBool, api("noTLSVerify")),
		in("originServerName", tString),
		in("proxyType", tString),
		in("tcpKeepAlive", tInt),
		in("tlsTimeout", tInt),
	)
}

var tunnelConfigSchema = object(
	in("accountId", tString, required, inPath, replaces),
	in("tunnelId", tString, required, inPath, replaces),
	in("config", camelObject(
		in("ingresses", listOf(camelObject(
			in("hostname", tString),
			in("originRequest", originRequest()),
			in("path", tString),
			in("service", tString, required),
		)), api("ingress")),
		in("originRequest", originRequest()),
	), computed),
	in("source", tString, computed, oneOf("local", "cloudflare")),
	out("createdAt", tString, rewritten), // of the configuration's current version
	out("version", tInt, rewritten),
)

// sameHostname: the API stores names fully qualified, lower case and without the final dot; "@" is
// the zone apex and a relative name gets the zone appended.
func sameHostname(input, apiValue string) bool {
	given, stored := normalName(input), normalName(apiValue)
	if given == stored {
		return true
	}
	if given == "@" {
		return strings.Contains(stored, ".")
	}
	return !strings.Contains(given, ".") && strings.HasPrefix(stored, given+".")
}

// sameContent: the API lower-cases host names (CNAME targets) and drops their final dot.
func sameContent(input, apiValue string) bool { return normalName(input) == normalName(apiValue) }

func normalName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}
