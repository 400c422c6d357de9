"""The meta-study store: a hive-partitioned Parquet dataset with atomic, upserting commits.

Layout of a store at ``ROOT`` (a local path or any URI pyarrow filesystems accept)::

    ROOT/us_task=<task>/ds_task=<task>/part-<version>-<uid>.parquet   live data, one file per partition
    ROOT/_quarantine/part-<version>-<uid>.parquet                    rejected rows, with reasons
    ROOT/_state/<name>-<version>-<uid>.parquet                       per-source ingest state
    ROOT/_meta/manifests/<version>.json                              the commit log; newest wins
    ROOT/_meta/LOCK                                                  writers' lock (flock)
    ROOT/_staging/<txn>/...                                          files of a commit in flight
    ROOT/_damaged/<version>/...                                      files 'store check --repair' set aside

Plain ``pyarrow.dataset`` / ``pandas.read_parquet(ROOT)`` skip names starting with ``_`` or ``.``,
so they see exactly the live data files whenever no commit is finalizing.

The package, bottom to top (each module imports only the ones above it; ``_merge`` names
``Store`` for type checking only):

- ``_files``: the filesystem behind a store URI (local or pyarrow), URIs as messages show them,
  fsync, fault injection for the crash tests, Parquet bytes;
- ``_lock``: the writers' lock (``flock`` locally, a lease file on object stores);
- ``_manifest``: the manifest format, the quarantine's table, what a commit and a check return;
- ``_merge``: one commit's plan: the partition merge (upsert) and the files it stages;
- ``_store``: :class:`Store` (reading, the commit protocol, damage checks and repair).
"""

from ._files import display_uri, partition_dir
from ._manifest import (FORMAT, FORMAT_VERSION, KEEP_LOG, KEEP_MANIFESTS, QUARANTINE_SCHEMA, CheckResult,
                        CommitResult, Damage, StoreSummary)
from ._store import Filter, Store, open_store

__all__ = ["FORMAT", "FORMAT_VERSION", "KEEP_LOG", "KEEP_MANIFESTS", "QUARANTINE_SCHEMA", "CheckResult",
           "CommitResult", "Damage", "Filter", "Store", "StoreSummary", "display_uri", "open_store",
           "partition_dir"]
