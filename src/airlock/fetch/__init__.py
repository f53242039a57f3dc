"""Fetching: parallel, resumable, checksum-verified downloads into a content-addressed cache."""

from airlock.fetch.checksums import checksum_from_spec, parse_checksum_file
from airlock.fetch.downloader import FetchedFile, FileRequest, ProgressSink, fetch_files
from airlock.fetch.retry import RetryPolicy

__all__ = [
    "FetchedFile",
    "FileRequest",
    "ProgressSink",
    "RetryPolicy",
    "checksum_from_spec",
    "fetch_files",
    "parse_checksum_file",
]
