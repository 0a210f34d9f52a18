"""Values read out of an upstream's chunk or whole answer: a non-streamed completion as one chunk, text parts,
logprobs and annotations in the Responses shape, and the error an answer that breaks the protocol raises."""

from __future__ import annotations

from typing import Any


class UpstreamProtocolError(Exception):
    """The upstream sent something that is not a Chat Completions answer, or reported an error mid-stream."""

    def __init__(self, message: str, code: str = "upstream_error") -> None:
        super().__init__(message)
        self.code = code


def completion_as_chunk(completion: Any) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` as one ``chat.completion.chunk``, for :class:`OutputBuilder`."""
    if not isinstance(completion, dict):
        raise UpstreamProtocolError("The upstream answer is not a JSON object.")
    if "error" in completion and "choices" not in completion:
        return completion  # feed() reports it
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("The upstream answer has no choices.")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError("The upstream answer's first choice has no message.")
    delta: dict[str, Any] = {
        "reasoning_content": message.get("reasoning_content") or message.get("reasoning"),
        "content": message.get("content"),
        "refusal": message.get("refusal"),
        "annotations": message.get("annotations"),
    }
    tool_calls = message.get("tool_calls")
    if tool_calls:
        delta["tool_calls"] = [dict(call, index=index) for index, call in enumerate(tool_calls)
                               if isinstance(call, dict)]
    return {
        "choices": [{"index": 0, "delta": delta, "logprobs": choice.get("logprobs"),
                     "finish_reason": choice.get("finish_reason") or "stop"}],
        "usage": completion.get("usage"),
        "service_tier": completion.get("service_tier"),
    }


def _text_of_parts(content: Any) -> str:
    """Some servers (Mistral's among them) send content as a list of parts; their text is the delta."""
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return "".join(part["text"] for part in content if part.get("type") == "text" and type(part.get("text"))
                       is str)
    raise UpstreamProtocolError("The upstream sent a content delta that is neither a string nor a list of parts.")


def _logprob(entry: dict[str, Any]) -> dict[str, Any]:
    token = entry.get("token", "")
    return {
        "token": token,
        "logprob": entry.get("logprob", 0.0),
        "bytes": entry.get("bytes") or list(token.encode()),
        "top_logprobs": [
            {"token": top.get("token", ""), "logprob": top.get("logprob", 0.0),
             "bytes": top.get("bytes") or list(top.get("token", "").encode())}
            for top in entry.get("top_logprobs") or ()
        ],
    }


def _annotation(annotation: dict[str, Any]) -> dict[str, Any] | None:
    if annotation.get("type") == "url_citation":
        citation = annotation.get("url_citation") or annotation
        return {"type": "url_citation", "start_index": citation.get("start_index", 0),
                "end_index": citation.get("end_index", 0), "url": citation.get("url", ""),
                "title": citation.get("title", "")}
    return None
