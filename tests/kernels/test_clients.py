"""Attached clients per kernel and client session; pages following notebooks."""

from __future__ import annotations

from jupyter_persist.kernels.clients import PAGE_LOAD_GRACE, AttachedClients


def test_clients_are_counted_per_kernel_and_session() -> None:
    clients = AttachedClients()
    assert not clients.any("k")
    clients.attach("k", "tab-1")
    clients.attach("k", "tab-1")  # a reconnect before the old socket closed
    clients.attach("k", "tab-2")
    assert clients.any("k")
    assert clients.has_session("k", "tab-1")
    assert not clients.has_session("other", "tab-1")
    assert clients.detach("k", "tab-1") == 2
    assert clients.has_session("k", "tab-1")
    assert clients.detach("k", "tab-1") == 1
    assert not clients.has_session("k", "tab-1")
    assert clients.detach("k", "tab-2") == 0
    assert not clients.any("k")
    assert clients.detach("k", "tab-2") == 0  # a second disconnect of one socket
    clients.attach("k", "tab-3")
    clients.forget_kernel("k")
    assert not clients.any("k")


def test_followers_per_notebook() -> None:
    clients = AttachedClients()
    first = clients.follow("a.ipynb")
    second = clients.follow("a.ipynb")
    clients.unfollow("a.ipynb", first)
    assert clients.followed("a.ipynb")
    clients.unfollow("a.ipynb", second)
    clients.unfollow("a.ipynb", second)  # closed twice
    assert not clients.followed("a.ipynb")
    assert not clients.followed("b.ipynb")


def test_a_page_loads_until_its_kernel_connects_or_the_grace_ends() -> None:
    clients = AttachedClients()
    clients.attach("k", "old-tab")  # attached before the page opened: does not count
    opened = clients.follow("a.ipynb")
    assert clients.page_loading("a.ipynb", {"k"})
    assert clients.page_loading("a.ipynb", set())  # nothing captured yet: still loading
    assert not clients.page_loading("b.ipynb", {"k"})
    assert not clients.page_loading("a.ipynb", {"k"}, now=opened + PAGE_LOAD_GRACE)
    clients.attach("other-kernel", "page")
    assert clients.page_loading("a.ipynb", {"k"})
    clients.attach("k", "page")  # the page's kernel connection
    assert not clients.page_loading("a.ipynb", {"k"})
    clients.detach("k", "page")  # its connection drops later: attached clients decide
    assert not clients.page_loading("a.ipynb", {"k"})
    clients.unfollow("a.ipynb", opened)
    assert not clients.page_loading("a.ipynb", set())
