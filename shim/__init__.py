"""The containerd shim `containerd-shim-wasm-oci-v1` (runtime `io.containerd.wasm-oci.v1`):
containerd's task API (v3, and v2 for containerd 1.x) over ttrpc or gRPC, one long-lived
daemon per group of tasks. See docs/shim.md.

The binary (`main`): `start` and `delete`, short commands containerd waits for, import only the
standard library and these small modules:
  flags        the command line             config     the TOML configuration
  group        which daemon a task joins    api_version  task API 2 or 3, per containerd
  control      the daemon's control socket (reserve a task, forget a task)
  start        find or spawn the group's daemon   delete   clean up after a lost task
  wire         the few hand-encoded protobuf messages they need
  rootfs       mount(2) / umount2(2)        launcher   writes the fast `python -S` launcher
The daemon (`serve`, daemon.py) and what it serves:
  lifetime     reservations, linger and the exit under the group lock
  service      the task API over Task objects   task     one task's state and run
  guest        where a task's Wasm comes from   image    containerd's containers/images/content
  trust        the trust policy at Create       bundle   the OCI spec -> what the guest may use
  stdio        the client's stdio FIFOs          logs     logging to the bundles' log FIFOs
  stats        task metrics as cgroups v2 Metrics
  transport/   ttrpc and gRPC servers, the handler registry, event publishing
"""
