"""The built-in tools as a Chat Completions model is offered them: the function (name, description, JSON schema)
each built-in kind becomes — the client-executed ``shell``, ``local_shell``, ``apply_patch`` and ``tool_search``,
and the server-side tools the tool loop runs — and which server-side types a deployment's loop serves.

Apart from tools.py (the plan of what one request offers, and how its calls read back) because these are
fixed facts of the bridge and the deployment, not of a request: the doors ask :func:`runs_server_tools` of every
request, the run's set-up asks :func:`served_tool_types` once per process.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def object_schema(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """The JSON schema of a function's arguments: an object of ``properties``, those named ``required`` required
    (the one wrapper every built-in's schema has, written once)."""
    return {"type": "object", "properties": properties, "required": list(required)}


def one_string_parameter(name: str, description: str) -> dict[str, Any]:
    """The JSON schema of a function whose one argument, required, is the string ``name``."""
    return object_schema({name: {"type": "string", "description": description}}, name)


SHELL_PARAMETERS = object_schema({
    "commands": {"type": "array", "items": {"type": "string"},
                 "description": "The shell commands to run, in order."},
    "timeout_ms": {"type": "integer", "description": "Optional wall-clock limit for the commands, in ms."},
    "max_output_length": {"type": "integer",
                          "description": "Optional limit on the characters of output to return."},
}, "commands")
SHELL_DESCRIPTION = ("Runs shell commands on the user's machine and returns their stdout, stderr and exit code. "
                     "Use it to inspect files, run programs and tests.")
LOCAL_SHELL_PARAMETERS = object_schema({
    "command": {"type": "array", "items": {"type": "string"},
                "description": "The command to run, as its argument vector (e.g. [\"ls\", \"-la\"])."},
    "working_directory": {"type": "string", "description": "Optional directory to run the command in."},
    "timeout_ms": {"type": "integer", "description": "Optional wall-clock limit for the command, in ms."},
    "env": {"type": "object", "additionalProperties": {"type": "string"},
            "description": "Optional environment variables to set for the command."},
}, "command")
LOCAL_SHELL_DESCRIPTION = ("Runs one command on the user's machine and returns its output. Use it to inspect files, "
                           "run programs and tests.")
APPLY_PATCH_PARAMETERS = object_schema({
    "type": {"type": "string", "enum": ["create_file", "update_file", "delete_file"],
             "description": "What to do with the file."},
    "path": {"type": "string", "description": "The file's path."},
    "diff": {"type": "string", "description": "For create_file and update_file: the diff to apply, in the "
                                              "V4A format (lines starting with '+', '-' or ' ')."},
}, "type", "path")
APPLY_PATCH_DESCRIPTION = "Creates, updates or deletes one file of the user's workspace with a diff."
TOOL_SEARCH_PARAMETERS = one_string_parameter("query", "What the needed tool should do.")
TOOL_SEARCH_DESCRIPTION = ("Searches for more tools. Call it when none of the offered tools fits the task; the "
                           "tools it finds are offered from the next turn on.")
HOSTED_SHELL_DESCRIPTION = ("Runs shell commands in a sandboxed Linux container and returns each command's stdout, "
                            "stderr and exit code. Each command runs with /bin/sh -c in /mnt/data, which holds the "
                            "user's files and keeps every file written there for later commands and calls; "
                            "coreutils and python3 are installed; there is no network. Mention the path "
                            "(/mnt/data/…) of a file you made for the user.")
SERVER_KINDS = frozenset({"mcp", "web_search", "file_search", "server_tool_search", "code_interpreter",
                          "image_generation", "hosted_shell", "multi_agent", "program"})
"""Call targets the bridge runs: an MCP server's tool, the web search, the file search, the server-side tool
search, the code interpreter and the hosted shell (``namespace``: the container id), the image generation, the
multi-agent beta's actions (multi_agent.py)."""
WEB_SEARCH_TYPES = frozenset({"web_search", "web_search_2025_08_26", "web_search_preview",
                              "web_search_preview_2025_03_11"})
SERVED_TOOL_TYPES = frozenset({"mcp", "tool_search", "file_search", "code_interpreter", "image_generation",
                               "shell", "programmatic_tool_calling", *WEB_SEARCH_TYPES})
"""Request tool types a tool loop can serve (``plan_tools(served=…)``); ``tool_search`` only with execution
``server`` or unset, ``shell`` only with a container environment (:func:`is_hosted_shell`)."""


def is_hosted_shell(tool: object) -> bool:
    """Is this a ``shell`` tool for the bridge's tool loop (``environment`` ``container_auto`` or
    ``container_reference``, or one it must refuse: any other environment), rather than the client's own shell
    (``local``, or no environment)?"""
    if not isinstance(tool, dict) or tool.get("type") != "shell":
        return False
    environment = tool.get("environment")
    return environment is not None and not (isinstance(environment, dict) and environment.get("type") == "local")


def served_tool_types(web_search: bool, file_search: bool = False, code: bool = False,
                      images: bool = False, shell: bool = False) -> frozenset[str]:
    """The tool types a deployment's tool loop runs: all of :data:`SERVED_TOOL_TYPES`, less the web search ones
    when no search provider is configured, ``file_search`` when there are no vector stores to search,
    ``code_interpreter`` and the hosted ``shell`` when there are no containers and ``image_generation`` when the
    deployment does not say its upstream generates images (those then fall under the unsupported-tool policy). A
    deployment with containers serves ``code_interpreter`` even where the sandbox cannot start: the request is
    then refused naming the cause, never answered without running the code."""
    served = SERVED_TOOL_TYPES if web_search else SERVED_TOOL_TYPES - WEB_SEARCH_TYPES
    served = served if file_search else served - {"file_search"}
    served = served if images else served - {"image_generation"}
    served = served if shell else served - {"shell"}
    return served if code else served - {"code_interpreter"}


def runs_server_tools(tools: object, served: Collection[str]) -> bool:
    """Does a request's raw ``tools`` value hold a tool the loop runs (a type in ``served``; a ``tool_search``
    only with execution ``server`` or unset)? A scan of the decoded JSON, before any validation: the ext_proc door
    asks it of every request, so it must cost nothing for the requests that have none."""
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") in served and (
                tool.get("type") != "tool_search" or tool.get("execution") in (None, "server")) and (
                tool.get("type") != "shell" or is_hosted_shell(tool)):
            return True
    return False


WEB_SEARCH_NAME = "web_search"
WEB_SEARCH_DESCRIPTION = ("Searches the web and returns numbered sources (title, URL, excerpt). Use it for current "
                          "events and facts you are not sure of; cite the sources you use.")
WEB_SEARCH_PARAMETERS = one_string_parameter("query", "The search query.")
FILE_SEARCH_NAME = "file_search"
FILE_SEARCH_DESCRIPTION = ("Searches the user's uploaded files and returns numbered excerpts with their file names. "
                           "Use it for questions the files may answer; cite the excerpts you use by their markers.")
FILE_SEARCH_PARAMETERS = one_string_parameter("query", "What to look for in the files.")
CODE_NAME = "python"
CODE_DESCRIPTION = ("Runs Python 3 code in a sandbox and returns what it printed (stdout, stderr, or the traceback) "
                    "and the files it wrote. The working directory is /mnt/data, which holds the user's files and "
                    "keeps every file written there for later calls; each call starts a fresh interpreter, so save "
                    "what a later call needs to /mnt/data. numpy is installed; there is no network. Mention the "
                    "path (/mnt/data/…) of a file you made for the user.")
CODE_PARAMETERS = one_string_parameter("code", "The Python code to run.")
IMAGE_NAME = "image_generation"
IMAGE_DESCRIPTION = ("Generates one image from a text description and shows it to the user. Describe the image "
                     "fully in the prompt (subject, style, composition, text in it); you get a short note, not "
                     "the image, back. Do not repeat the image's data in your answer.")
IMAGE_SIZES = ("1024x1024", "1024x1536", "1536x1024")
"""The sizes a model may choose among when the tool leaves ``size`` to it (unset or ``auto``)."""


def image_parameters(choose_size: bool) -> dict[str, Any]:
    """The image generation function's schema: ``prompt``, and ``size`` when the request's tool leaves the size
    to the model (the rest of the tool's settings are the request's, not the model's)."""
    properties: dict[str, Any] = {"prompt": {"type": "string", "description": "The description of the image."}}
    if choose_size:
        properties["size"] = {"type": "string", "enum": list(IMAGE_SIZES),
                              "description": "Optional: square, portrait or landscape."}
    return object_schema(properties, "prompt")
