"""The upstream client moved to :mod:`responses_bridge.upstream` (background runs use it outside this adapter);
kept here so existing imports work."""

from __future__ import annotations

from ...upstream import UpstreamAnswer, UpstreamClient, UpstreamFailure

__all__ = ["UpstreamAnswer", "UpstreamClient", "UpstreamFailure"]
