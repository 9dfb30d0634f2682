"""The twin's Cloudflare: an emulator of the Cloudflare API v4 endpoints the program uses.

Cloudflare cannot be reached from the twin, so this is its one stand-in for a service that cannot
run locally. It keeps state (in memory, optionally in a JSON file), answers with Cloudflare's
envelope, ids (32 hex digits; UUIDs for tunnels), timestamps and status codes, and refuses what
Cloudflare refuses. The provider plugin ``pulumi-resource-cloudflare`` (``engine/go``) talks to it
through ``cloudflare:baseUrl``.

Endpoints (below ``/client/v4``): ``accounts/{id}/load_balancers/monitors[/{id}[/references]]``,
``accounts/{id}/load_balancers/pools[/{id}[/references]]``, ``zones/{id}/load_balancers[/{id}]``,
``zones/{id}/dns_records[/{id}]``, ``accounts/{id}/cfd_tunnel[/{id}[/configurations]]``; GET, POST,
PUT, PATCH, DELETE as Cloudflare has them (PUT replaces the object, PATCH changes the fields sent;
tunnels are PATCHed, configurations PUT).

What it refuses, and the rule each refusal comes from (codes in each module's docstring):

* authentication: no ``Authorization`` header, one that is not ``Bearer <token>``, a wrong token;
  an account or zone it does not serve (as for a token without access to it); ids that are not
  identifiers (Cloudflare's authentication and routing errors 6003/6103/6111, 10000, 7003);
* any field an endpoint does not know, a value of the wrong JSON type, outside its enumeration or
  range (the shapes of Cloudflare's OpenAPI schema, cloudflare/api-schemas);
* load balancing (OpenAPI constraints and the API's own checks, code 1002 "validation failed"):
  an origin weight, a ``random_steering.default_weight`` or a ``pool_weights`` value outside 0..1
  (the OpenAPI schema bounds origin and default weights to 0..1; pool weights are relative weights
  on the same 0..1 scale in Cloudflare's docs, and the twin holds them to it); a pool without
  origins, an origin without an address, duplicate origin names, a pool name with other characters
  than letters, digits, ``-`` and ``_``; a pool's ``monitor`` that names no monitor of the account
  (monitor groups are not emulated, so any ``monitor_group`` is unknown); a load balancer whose
  ``default_pools``, ``fallback_pool``, region/pop/country pools, ``pool_weights`` keys or rule
  overrides name a pool that does not exist; a load-balancer name outside its zone; a
  ``session_affinity_ttl`` outside the range its policy allows; a TCP/UDP/SMTP monitor without a
  port; ``health_sources`` other than null or ``["regional", "global"]``;
* deleting a monitor a pool uses or a pool a load balancer uses (412, code 1005 "This object is
  referenced by other objects, delete them first.");
* a pool *without* a monitor is accepted, as Cloudflare accepts it: ``monitor`` is optional in the
  API (and in the provider's schema); such a pool is simply never health-checked. What Cloudflare
  refuses around monitors is a ``monitor`` id that does not exist, which the twin refuses too;
* DNS: an A record whose content is not IPv4 (9005), AAAA not IPv6 (9006), an invalid CNAME target
  (9007); a TTL other than 1 (automatic) or 60..86400 (9021); a proxied record of a type that cannot
  be proxied (9004); a proxied record with a TTL other than 1 (9021; Cloudflare itself stores such a
  record with TTL 1 and drops the TTL sent, the twin refuses so that a declared TTL never silently
  disappears); a name outside the record's zone (9000; a single label is taken relative to the
  zone, ``@`` is the apex, as Cloudflare does); a CNAME sharing its name with another record
  (81053/81054); an identical record (81058);
* tunnels: a ``tunnel_secret`` that is not base64 of at least 32 bytes, a second live tunnel with
  the same name (409), changing ``config_src``; a configuration that cloudflared would refuse,
  above all one whose last ingress rule is not a catch-all (1056 "Bad Configuration: Validation
  failed: The last ingress rule must match all URLs (i.e. it should not have a hostname or path
  filter)").

Error codes: those Cloudflare is seen answering (in its docs, its providers' issue trackers and
client test suites) are used as they are: 1002, 1005, 1056, 6003/6103/6111, 6007, 7000/7003, 9000,
9004, 9005, 9006, 9007, 9021, 10000, 81044, 81053/81054/81058. Where Cloudflare's own code could not
be found the twin chose one, and says so here: 1003 (a load-balancing object or tunnel that does not
exist), 1001 (a tunnel body that does not fit), 1013 (a duplicate tunnel name), 1004 (a DNS body that
does not fit the record shape), 10405 (a method a route does not have). Messages carry the field and
the value, so a refusal names what was refused.

Running it: ``python -m twin.cloudflare --listen HOST:PORT --token-file F --account ID --zone ID=NAME
[--state FILE]`` (prints its URL), or from Python :class:`CloudflareEmulator` (``start()``/``stop()``,
``url``, ``state()``, ``requests``, ``add_observer()``). ``GET /_twin/state`` is the read-only view of
the state. Observers get a :class:`Change` after each accepted change: the hook by which the
rehearsal can apply accepted load-balancer weights and DNS records to its HAProxy and nsd.
"""

from .server import CloudflareEmulator, ConfigurationError
from .store import Change, StateFileError

__all__ = ["Change", "CloudflareEmulator", "ConfigurationError", "StateFileError"]
