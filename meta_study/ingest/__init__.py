"""Ingest: sources (file exports, MLflow servers) and mappings into the meta-study store."""

from __future__ import annotations

from .mapping import IngestMapping, load_mapping, parse_mapping
from .pipeline import SourceReport, ingest_sources
from .sources import (Source, SourceBatch, SourceOptions, SourceSpec, load_sources_file,
                      open_source_specs, open_sources, refuse_shared_files, source_kinds)

__all__ = ["IngestMapping", "Source", "SourceBatch", "SourceOptions", "SourceReport", "SourceSpec",
           "ingest_sources", "load_mapping", "load_sources_file", "open_source_specs", "open_sources",
           "parse_mapping", "refuse_shared_files", "source_kinds"]
