"""The twin's Cloudflare edge: what the emulator accepted, applied to real HAProxy and nsd.

Cloudflare's API (the emulator, :mod:`twin.cloudflare`) only stores objects; in production its edge then
serves them. Here :mod:`twin.edge` does that part with real servers, in the twin's edge namespace:

* **HAProxy** is the load balancer's proxy: one backend per pool, its origin reached where the pool's
  tunnel is connected, health-checked as the pool's monitor says, and the load balancer's
  ``random_steering`` weights (a random draw over the healthy pools) choosing the pool per request;
* **nsd** serves the zone's DNS records with their TTLs (a proxied record or a load balancer's hostname
  answers with the edge's address, as Cloudflare's anycast does), **unbound** is the clients' caching
  resolver.

So the weights, health checks and records that serve the rehearsal's load are exactly the ones the
program declared and the emulator accepted. The one liberty: a tunnel's traffic goes from the edge to
the address of the server whose ``cloudflared`` holds the tunnel's connection (its ingress rule's port),
rather than through that connection; a tunnel without a live connection serves nothing (Cloudflare's
error 1033), as in production. Times (monitor intervals, TTLs) are divided by the rehearsal's time scale.

:mod:`twin.edge.render` turns the emulator's state into the servers' configuration (pure functions);
``python -m twin.edge`` runs the servers and keeps them in step with the emulator.
"""
