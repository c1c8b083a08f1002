"""Bare trio-websocket servers: the reference every Rivet figure is a ratio against.

``echo_server`` and ``broadcast_server`` are runnable with ``python -m``; both take
``--fast-write`` to send through ``fastwrite.send_frame`` instead of ``send_message``.
"""
