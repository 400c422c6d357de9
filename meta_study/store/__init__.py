"""The meta-study store: a partitioned Parquet dataset with atomic, upserting commits.

Layout of a store at ``ROOT`` (a local path or any URI pyarrow filesystems accept; local paths and
``s3://`` can be written, other object stores only read)::

    ROOT/<us_task>/<ds_task>/part-<version>-<uid>.parquet   live data, one file per partition
    ROOT/_quarantine/part-<version>-<uid>.parquet          rejected rows, with reasons
    ROOT/_state/<hash>-<version>-<uid>.parquet             per-source ingest state (hash: sha1 of the name)
    ROOT/_meta/manifests/<version>.json                    the commit log; newest wins
    ROOT/_meta/manifests/<version>.copy.json               its copy, for repair
    ROOT/_meta/LOCK                                        writers' lock (flock, local)
    ROOT/_meta/LEASE.json                                  writers' lease (S3)
    ROOT/_staging/<version>-<random>/...                   files of a commit in flight
    ROOT/_damaged/<version>/...                            files 'store check --repair' set aside

Task names are percent-encoded in the directory names, and every data file holds ``us_task`` and
``ds_task`` too, as strings: plain readers never infer their type from a directory name (format
2; stores of format 1 used hive directories ``us_task=<task>/ds_task=<task>`` and are upgraded at
their first commit). ``pandas.read_parquet(ROOT)`` and ``pyarrow.dataset`` skip names starting
with ``_`` or ``.``, and the glob ``ROOT/*/*/*.parquet`` (polars, duckdb) matches exactly the live
data files: they all see the latest version whenever no commit is finalizing.

The package, bottom to top (each module imports only the ones above it; ``_merge`` names
``Store`` for type checking only):

- ``_s3``: the conditional writes (create if absent, replace if unchanged) pyarrow lacks, via boto3;
- ``_files``: the filesystem behind a store URI (local or pyarrow), the commit point's exclusive
  create, URIs as messages show them, fsync, fault injection, Parquet bytes to and from tables;
- ``_lock``: the writers' lock (``flock`` locally, a lease with conditional writes on S3);
- ``_manifest``: the manifest format, the quarantine's table, what a commit and a check return;
- ``_merge``: one commit's plan: the partition merge (upsert) and the files it stages;
- ``_store``: :class:`Store` (reading, the commit protocol, damage checks and repair).
"""

from ._files import display_uri, partition_dir
from ._lock import LockHolder
from ._manifest import (FORMAT, FORMAT_VERSION, KEEP_LOG, KEEP_MANIFESTS, QUARANTINE_SCHEMA, CheckResult,
                        CommitResult, Damage, StoreSummary)
from ._store import Filter, Store, open_store

__all__ = ["FORMAT", "FORMAT_VERSION", "KEEP_LOG", "KEEP_MANIFESTS", "QUARANTINE_SCHEMA", "CheckResult",
           "CommitResult", "Damage", "Filter", "LockHolder", "Store", "StoreSummary", "display_uri", "open_store",
           "partition_dir"]
