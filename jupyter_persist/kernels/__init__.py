"""Receiving: what the kernels send and what clients ask of them.

The server-side IOPub subscriptions, read in a process of their own, and their decoding
(``listener``, ``reader``, ``readloop``, ``subscription``, ``iopub``, ``idle``,
``gateway``), the kernel
websocket hooks that learn cell ids, attached clients and the replay buffer
(``websocket``, ``clients``, ``replay``). Imports nothing else of the extension but the
event-loop meter.
"""
