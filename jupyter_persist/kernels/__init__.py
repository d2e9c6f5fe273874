"""Receiving: what the kernels send and what clients ask of them.

The server-side IOPub subscription and its decoding (``listener``, ``iopub``, ``idle``),
the kernel websocket hooks that learn cell ids, attached clients and the replay buffer
(``websocket``, ``clients``, ``replay``). Imports nothing else of the extension.
"""
