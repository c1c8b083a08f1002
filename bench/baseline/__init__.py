"""Bare trio-websocket servers: the reference every Rivet figure is a ratio against.

``echo_server`` and ``broadcast_server`` are runnable with ``python -m``; both take
``--fast-write`` to send through ``fastwrite.send_frame`` instead of ``send_message``.
``transport_echo`` is the same echo over Rivet's own transport (``server.transport``): the
ceiling of the transport the server runs on, not a reference for the targets.
"""
