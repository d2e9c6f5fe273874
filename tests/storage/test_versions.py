"""The lineage of our writes of a notebook (pure): when a tab may take the file's version."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from jupyter_persist.storage.versions import (
    CHAIN_VERSIONS,
    FileVersion,
    WrittenVersions,
    parse_time,
)

T0 = datetime(2026, 12, 4, 2, 0, 0, 123456, tzinfo=timezone.utc)


def at(seconds: float, size: int = 100, digest: str | None = None) -> FileVersion:
    return FileVersion(T0 + timedelta(seconds=seconds), size, digest)


def tab(version: FileVersion) -> FileVersion:
    """A tab's idea of a version: its time and hash, no size (JupyterLab keeps none)."""
    return FileVersion(version.last_modified, hash=version.hash)


def test_a_tab_at_the_origin_may_take_our_latest_write() -> None:
    versions = WrittenVersions()
    loaded = at(0, digest="h0")
    versions.wrote("a.ipynb", loaded, at(5, 120))
    versions.wrote("a.ipynb", None, at(10, 140))  # from our cached copy: chain continues
    disk = at(10, 140, "h2")
    lineage = versions.only_ours_since("a.ipynb", tab(loaded), "", disk)
    assert lineage is not None
    assert lineage.origin == loaded


def test_a_write_by_someone_else_breaks_the_chain() -> None:
    versions = WrittenVersions()
    loaded = at(0, digest="h0")
    versions.wrote("a.ipynb", loaded, at(5, 120))
    first = versions.lineage("a.ipynb")
    assert first is not None
    token = first.token
    # An editor wrote the file (new time and hash); our next write reads that.
    foreign = at(7, 90, "hx")
    versions.wrote("a.ipynb", foreign, at(10, 130))
    disk = at(10, 130, "h3")
    assert versions.only_ours_since("a.ipynb", tab(loaded), "", disk) is None
    assert versions.only_ours_since("a.ipynb", tab(loaded), token, disk) is None
    second = versions.lineage("a.ipynb")
    assert second is not None
    assert second.token != token
    assert second.origin == foreign


def test_the_disk_must_be_our_latest_write() -> None:
    versions = WrittenVersions()
    loaded = at(0, digest="h0")
    versions.wrote("a.ipynb", loaded, at(5, 120))
    # Written since by someone else: same size, later time.
    assert versions.only_ours_since("a.ipynb", tab(loaded), "", at(6, 120, "hy")) is None
    # Same time, other size.
    assert versions.only_ours_since("a.ipynb", tab(loaded), "", at(5, 121, "hy")) is None


def test_a_tab_that_loaded_one_of_our_writes_may_take_the_latest() -> None:
    """A page reopened mid-run loads the file as one of our writes lands: it holds the
    write before the latest, whose time it has and whose hash we never knew."""
    versions = WrittenVersions()
    versions.wrote("a.ipynb", at(0, digest="h0"), at(5, 120))
    versions.wrote("a.ipynb", None, at(6, 130))
    versions.wrote("a.ipynb", None, at(7, 140))
    disk = at(7, 140, "h3")
    loaded = at(5, 120, "h1")
    assert versions.only_ours_since("a.ipynb", tab(loaded), "", disk) is not None
    assert versions.only_ours_since("a.ipynb", tab(at(6, 130, "h2")), "", disk) is not None
    # A time none of our writes left on disk is not one of ours.
    assert versions.only_ours_since("a.ipynb", tab(at(5.5, 125, "hx")), "", disk) is None


def test_a_tab_that_took_a_version_sends_the_token() -> None:
    versions = WrittenVersions()
    versions.wrote("a.ipynb", at(0, digest="h0"), at(5, 120))
    lineage = versions.lineage("a.ipynb")
    assert lineage is not None
    taken = at(5, 120, "h1")
    # So many writes since that the one the tab took is no longer remembered.
    for n in range(1, CHAIN_VERSIONS + 1):
        versions.wrote("a.ipynb", None, at(5 + n, 120 + n))
    disk = at(5 + CHAIN_VERSIONS, 120 + CHAIN_VERSIONS, "h2")
    assert versions.only_ours_since("a.ipynb", tab(taken), "", disk) is None
    assert versions.only_ours_since("a.ipynb", tab(taken), "wrong", disk) is None
    assert versions.only_ours_since("a.ipynb", tab(taken), lineage.token, disk) is lineage
    # The origin is kept for the whole chain.
    assert versions.only_ours_since("a.ipynb", tab(at(0, digest="h0")), "", disk) is lineage


def test_a_tab_at_the_disks_version_gets_the_token() -> None:
    """A tab that loaded our write (reopened mid-run) can follow the chain from there."""
    versions = WrittenVersions()
    versions.wrote("a.ipynb", at(0, digest="h0"), at(5, 120))
    disk = at(5, 120, "h1")
    lineage = versions.only_ours_since("a.ipynb", tab(disk), "", disk)
    assert lineage is not None


def test_hashes_decide_where_both_have_one() -> None:
    versions = WrittenVersions()
    loaded = at(0, digest="h0")
    versions.wrote("a.ipynb", loaded, at(5, 120))
    disk = at(5, 120, "h1")
    # Same time as the origin but other bytes (a copy that kept the time): not ours.
    assert versions.only_ours_since("a.ipynb", tab(at(0, digest="hz")), "", disk) is None
    # No hash anywhere (a ContentsManager without hashes): the times decide.
    plain = WrittenVersions()
    plain.wrote("a.ipynb", at(0), at(5, 120))
    assert plain.only_ours_since("a.ipynb", FileVersion(T0), "", at(5, 120)) is not None
    later = FileVersion(T0 + timedelta(milliseconds=1))
    assert plain.only_ours_since("a.ipynb", later, "", at(5, 120)) is None


def test_never_written_and_forgotten_chains() -> None:
    versions = WrittenVersions(max_lineages=2)
    assert versions.only_ours_since("a.ipynb", at(0), "", at(0)) is None
    # Our write with no known origin (its chain was dropped) starts nothing.
    versions.wrote("a.ipynb", None, at(5))
    assert versions.lineage("a.ipynb") is None
    for name in ("a", "b", "c"):
        versions.wrote(f"{name}.ipynb", at(0), at(5))
    assert versions.lineage("a.ipynb") is None
    assert versions.lineage("c.ipynb") is not None


def test_a_rename_takes_the_lineage_along() -> None:
    versions = WrittenVersions()
    versions.wrote("a.ipynb", at(0), at(5))
    versions.renamed("a.ipynb", "dir/b.ipynb")
    assert versions.lineage("a.ipynb") is None
    assert versions.only_ours_since("dir/b.ipynb", at(0), "", at(5)) is not None


def test_file_version_of_models_and_times() -> None:
    model = {"last_modified": T0, "size": 7, "hash": "abc", "hash_algorithm": "sha256"}
    assert FileVersion.of(model) == FileVersion(T0, 7, "abc")
    assert FileVersion.of({"last_modified": "yesterday", "hash": ""}) == FileVersion(None)
    assert FileVersion.of(None) == FileVersion(None)
    as_text = {"last_modified": "2026-12-04T02:00:00.123456Z", "size": 7}
    assert FileVersion.of(as_text) == FileVersion(T0, 7)
    assert parse_time("2026-12-04T02:00:00.123456Z") == T0
    assert parse_time("2026-12-04T02:00:00.123456") == T0
    assert parse_time("not a time") is None
