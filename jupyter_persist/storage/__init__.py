"""Durable: getting the outputs into notebooks, journals and logs.

The notebook writer and the chain of its writes (``writer``, ``versions``), the
collaboration-room writer (``room``), the flusher that decides when a notebook is
written (``flusher``), the crash journal and its recovery (``journal``, ``recorder``,
``recovery``, ``ondisk``), the text log (``textlog``), the ContentsManager's save hooks
(``savehooks``) and a returning tab's check (``returning``).
"""
