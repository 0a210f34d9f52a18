"""``responses-bridge doctor``: can the code interpreter run code on this machine, and if not, why and how to fix it.

Runs the sandbox's checks (sandbox/doctor.py) with the limits the settings give (``RESPONSES_BRIDGE_CODE_*``)
and prints one line per check; the exit status is 1 when code cannot run.
"""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor", help="check whether the code interpreter can run code here (bubblewrap, user namespaces, the "
        "interpreter inside the sandbox, which containment mode is in force and what it costs) and say how to fix "
        "what cannot")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .sandbox.doctor import diagnose

    settings = load_settings()  # a bad setting: the one line cli.main prints, exit status 2
    findings = diagnose(settings.sandbox_limits(), use_cgroup=settings.code_cgroup,
                        require_cgroup=settings.code_require_cgroup)
    width = max(len(finding.name) for finding in findings)
    for finding in findings:
        print(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.name:<{width}}  {finding.detail}")
    runs = all(finding.ok for finding in findings
               if finding.name in ("bubblewrap", "namespaces", "containment", "python")) and \
        any(finding.name == "python" for finding in findings)
    print("code interpreter: " + ("code runs in the sandbox here" if runs else
                                  "code cannot run here; the code_interpreter tool is refused"))
    shell = runs and any(finding.name == "containment" and finding.detail.startswith("cgroup mode")
                         for finding in findings)  # a shell forks: never in the single-process mode
    print("hosted shell: " + ("shell commands run in the sandbox here" if shell else
                              "shell commands cannot run here (they need the cgroup mode, a process each); the "
                              "shell tool with a container environment is refused"))
    return 0 if runs else 1
