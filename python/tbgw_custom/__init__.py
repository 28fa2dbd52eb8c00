"""tbgw_custom: runs an upstream-style custom connector class out of process, for tbgw.

ThingsBoard IoT Gateway (upstream) loads a connector entry with a `class` from its
`extensions/<type>/` folder and runs it inside its own process, handing it the gateway
object. tbgw is written in Rust, so it starts this package as a child process instead
(`python -m tbgw_custom`): it imports the class the same way, gives it a gateway object with
the methods upstream's connectors call (`send_to_storage`, `add_device`, `del_device`,
`send_rpc_reply`, ...), and forwards everything over tbgw's gRPC connector API (the
bidirectional `session` method: RPCs and attribute updates are pushed to the class's
`server_side_rpc_handler` and `on_attributes_update`).

Modules: `proto` (message classes), `convert` (pure conversions between upstream's data and
the messages), `gateway` (the gateway object), `loader` (finding the class), `host` (the
session and the process), `__main__` (arguments).
"""

__version__ = "0.1.0"
