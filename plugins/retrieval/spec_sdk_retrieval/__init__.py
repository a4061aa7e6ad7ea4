"""Retrieval-based speculative decoding (REST) for spec_sdk."""

from spec_sdk_retrieval.index import IndexStats, SuffixIndex
from spec_sdk_retrieval.proposer import RetrievalProposer

__all__ = ["IndexStats", "RetrievalProposer", "SuffixIndex"]
