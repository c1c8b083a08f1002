"""Rivet's load harness: ``python -m bench SCENARIO``.

Layout: ``harness`` (server subprocess, CPU/RSS accounting, CPU pinning), ``loadgen`` (load
worker processes and their control channel), ``workloads`` (the bare WebSocket clients),
``patterns`` (measured runs: request/reply, fan-out, connection storm), ``stats``,
``report`` (JSON, table, plots), ``scenarios`` (the registry) and ``baseline`` (the bare
trio-websocket servers every Rivet figure is a ratio against).
"""
