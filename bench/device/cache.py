"""Conversion cache entries that are either whole or absent.

An entry is a folder under the suite's cache directory (``<cache_dir>/<backend>/<key>/``). It is
built in a private temporary folder beside it, its files flushed to disk, and renamed into place
in one step, so a process killed while exporting or building never leaves half an entry behind.
An entry that exists but fails to load (a disk error, an entry from a build that was buggy) is
discarded and rebuilt, and the fact goes into the measurement's ``cache_events``.
"""
import glob
import logging
import os
import shutil
from typing import Callable, List, Optional, Tuple, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def _fsync_tree(folder: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CacheEntry:
    """One cache entry folder; ``events`` collects what happened to it, for the record."""

    def __init__(self, folder: str, events: List[str]) -> None:
        self.folder = folder
        self.events = events

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    @property
    def exists(self) -> bool:
        return os.path.isdir(self.folder)

    def build(self, make: Callable[[str], None]) -> None:
        """Run ``make(temporary_folder)``, then move the folder into place whole."""
        parent = os.path.dirname(self.folder)
        os.makedirs(parent, exist_ok=True)
        _remove_orphans(self.folder)
        partial = "{}.partial-{}".format(self.folder, os.getpid())
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        try:
            make(partial)
            _fsync_tree(partial)
            try:
                os.rename(partial, self.folder)
            except OSError:
                if not self.exists:
                    raise
                log.info("cache entry %s was completed meanwhile by another process; using that one", self.folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def load(self, loader: Callable[[str], T]) -> Optional[T]:
        """``loader(folder)`` on an existing entry; None (and the entry discarded) when it fails to load."""
        if not self.exists:
            return None
        try:
            return loader(self.folder)
        except Exception as exc:  # noqa: BLE001 - whatever a broken entry raises, the remedy is a rebuild
            message = "discarded cache entry {} that failed to load ({}: {}); rebuilt it".format(
                self.folder, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            log.warning(message)
            self.events.append(message)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None


def load_or_build(entry: CacheEntry, load: Callable[[str], T], build: Callable[[str], T]) -> Tuple[T, bool]:
    """The entry's object and whether it came from the cache: ``load(folder)`` of a whole entry that loads, else
    ``build(folder)``, which writes the entry's files and returns the object (the entry then moves into place)."""
    found = entry.load(load)
    if found is not None:
        return found, True
    built = []
    entry.build(lambda folder: built.append(build(folder)))
    return built[0], False


def _remove_orphans(folder: str) -> None:
    """Temporary folders of builds whose process died (killed while exporting): never used, removed here."""
    for partial in glob.glob(glob.escape(folder) + ".partial-*"):
        pid = partial.rsplit("-", 1)[1]
        if pid.isdigit() and not os.path.exists("/proc/{}".format(pid)):
            log.info("removing %s, left by a build that was killed", partial)
            shutil.rmtree(partial, ignore_errors=True)
