"""The twin's NodePort proxy passes a pod's close on as the pod's own kernel would (twin/kube/proxy.py).

Behind kube-proxy's NAT a request sent into a pod's close (its keep-alive timeout) is answered with a
reset, on which the gateway's HAProxy retries at once. The proxy used to pass on only the FIN and keep
the client's side open: such a request waited for an answer that could not come (a rehearsal request
held 10 s). These tests need no cluster: a pod is a plain socket server on loopback.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading

import pytest

from twin.kube.proxy import NodePortProxy

ADDRESS = "127.0.0.1"


def run(coro):
    """``coro`` on a loop of its own. Not ``asyncio.run``: it leaves the main thread without a current loop
    (``set_event_loop(None)``), which the Pulumi mocks of a later test in the same worker then miss."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


async def through_proxy(pod_handler, client, pod_port: int = 0):
    """Run ``client(node_port)`` against a proxy whose one endpoint is a server running ``pod_handler``
    (or the server already listening on ``pod_port``)."""
    pod = await asyncio.start_server(pod_handler, ADDRESS, 0) if pod_handler else None
    pod_port = pod.sockets[0].getsockname()[1] if pod else pod_port
    node_port = free_port()
    service = {"metadata": {"namespace": "ns", "name": "api"},
               "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}}
    proxy = NodePortProxy([ADDRESS], lambda: {("ns", "api"): service}, lambda s, p: [(ADDRESS, pod_port)])
    await proxy.sync()
    try:
        return await asyncio.wait_for(client(node_port), 10)
    finally:
        await proxy.close()
        if pod:
            pod.close()


async def read_until_end(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """Everything the connection gives, and how it ended: 'fin' or 'reset'."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 3):
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    except asyncio.TimeoutError:
        return data, "still open"
    return data, "fin"


def sending(request: bytes, half_close: bool = False):
    """A client for :func:`through_proxy`: sends ``request`` (then its FIN when ``half_close``) and reads
    whatever comes back, to the connection's end (:func:`read_until_end`)."""
    async def client(port):
        reader, writer = await asyncio.open_connection(ADDRESS, port)
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        outcome = await read_until_end(reader)
        writer.close()
        return outcome
    return client


def test_a_request_sent_after_the_pod_closed_its_keep_alive_connection_is_reset_not_left_waiting():
    async def pod(reader, writer):  # a keep-alive timeout: closes without a word
        await asyncio.sleep(0.2)
        writer.close()

    async def client(port):
        reader, writer = await asyncio.open_connection(ADDRESS, port)
        await asyncio.sleep(0.6)  # the pod has closed by now; the FIN reached this side
        writer.write(b"POST /posts HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        outcome = await read_until_end(reader)
        try:  # a second write on a reset connection fails, on a half-open one it goes through
            writer.write(b"x")
            await writer.drain()
            second = "accepted"
        except (ConnectionError, OSError):
            second = "refused"
        writer.close()
        return outcome, second

    (data, ended), second = run(through_proxy(pod, client))
    assert data == b""
    assert (ended, second) != ("fin", "accepted"), "the client's side was left half-open after the pod's close"
    assert second == "refused" or ended == "reset"


def test_a_request_the_pod_closed_on_unread_resets_the_client_at_once():
    listener = socket.create_server((ADDRESS, 0))

    def pod():  # a plain socket, so the request stays unread in the kernel: closing it sends a reset
        conn, _ = listener.accept()
        select.select([conn], [], [], 5)
        conn.close()

    server = threading.Thread(target=pod, daemon=True)
    server.start()

    client = sending(b"POST /posts HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    try:
        data, ended = run(through_proxy(None, client, pod_port=listener.getsockname()[1]))
    finally:
        server.join(5)
        listener.close()
    assert data == b""
    assert ended == "reset", f"the client saw {ended!r}, not the reset the pod's kernel sent"


def test_an_answer_is_forwarded_and_the_clients_half_close_still_gets_it():
    async def pod(reader, writer):  # reads the request to its end (the client's FIN), then answers and closes
        request = await reader.read()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" if request.startswith(b"GET") else b"?")
        await writer.drain()
        writer.close()

    data, ended = run(through_proxy(pod, sending(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", half_close=True)))
    assert data.endswith(b"\r\n\r\nok")
    assert ended in ("fin", "reset")  # closed either way once answered; never left open


@pytest.mark.parametrize("size", [1, 300_000])
def test_a_long_answer_reaches_the_client_whole_before_the_close(size):
    body = b"y" * size

    async def pod(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    data, ended = run(through_proxy(pod, sending(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")))
    assert data.endswith(body) and len(data) == len(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n") + size
    assert ended == "fin"
