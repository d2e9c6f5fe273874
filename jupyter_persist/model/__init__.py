"""Pure: IOPub messages into nbformat outputs, and what is held of each execution.

The reducer (``reducer``), the size caps (``caps``), the store of executions (``store``)
and the save guard's decision (``guard``). No I/O, nothing of the server.
"""
