"""`wasm-oci serve`: an HTTP trigger that runs a fresh guest instance per request, CGI-style.

The server takes a thread per connection, and runs at most `concurrency` guests at once (a
slot each). A guest runs on its request's own thread, unless guests need threads of their own
(the shim's on_guest_thread puts those in the container's cgroup): then it runs on one of up to
`concurrency` long-lived guest threads (a thread started per request, as `Execution.start()`
does, cost ~40% more CPU per small request; the hand-over to a guest thread and back ~12%).
Either way a request is answered at its deadline even when its guest sits in a host call no
stop can interrupt: its watcher (the request's thread waiting for a guest thread, or the
server's one watcher thread, every _WATCH, for the guests on their request's thread) stops it
at the deadline, and if it has not ended _GRACE later answers 504 for it (from another thread,
closing the connection, when the stuck guest holds the request's own). Such a guest keeps its
thread, and so its slot, until the call returns: stuck guests, too, are at most `concurrency`.
A request takes its slot before its body is read: what waits for a slot stays in the kernel's
socket buffers. Every request gets the run spec's limits and a clean 5xx without guest details
when its guest fails; what went wrong, with the guest's stderr, goes to the server's log
instead. The guest's stdout and stderr land in anonymous memory files (memfd), emptied and
reused by the next request once the guest is done with them: no Python code runs per guest
write, and the watcher looks at their size.

A wasi:http proxy component is answered through the proxy host (engine/proxy) instead, its
guest on a thread the host starts for the request, and its response streamed: the head goes
out once the guest sets it, the body as the guest writes it (chunked, or ended by the close
for an HTTP/1.0 client; the guest's writes wait while the client is behind), and a body the
guest does not finish, or one past max_response, ends in a reset rather than an end. The
request keeps its slot until the guest's run ends.

The package: server.py (CgiServer: slots, runs, answers), http1.py (the connections: parsing,
framing, streaming), watch.py (a CGI guest's memfd outputs and the watcher of its deadline).
"""

from wasm_oci.engine.serve.server import CgiServer, Counters, ServeLimits

__all__ = ["CgiServer", "Counters", "ServeLimits"]
